"""Neuron Semantic Attribution (methods.md): influential words, the learned neuron-word association, dense vs
pruned comparison and the causal ablation check."""
