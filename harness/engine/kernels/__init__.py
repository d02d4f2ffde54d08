"""Layer kernels of the side-by-side (task-batched) model: grouped convolution and max-pooling."""
