"""Tables, figures and headline metrics built from evaluation result files."""
