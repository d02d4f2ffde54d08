"""The meta-learning engine: the inner loop and meta-gradient (``meta_learning``), the side-by-side rules that run a meta-batch of tasks as one batched model, and their layer kernels."""
