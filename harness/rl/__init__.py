"""Meta-reinforcement learning: policy, rollouts, advantages, TRPO and the training loop (Finn et al. 2017, Section 5.3)."""
