"""Layer kernels of the fast paths: grouped convolution, max-pooling, and BatchNorm and activations with fused
double backwards (MAML's second order)."""
