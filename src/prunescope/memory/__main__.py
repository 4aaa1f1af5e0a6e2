from prunescope.memory.cli import main

main()
