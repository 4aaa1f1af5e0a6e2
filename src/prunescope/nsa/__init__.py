"""Neuron Semantic Attribution (docs/methods.md#neuron-semantic-attribution): influential words, the learned
neuron-word association, dense vs pruned comparison and the causal ablation check."""
