// oneDNN's C API (Debian: libdnnl-dev): the convolution kernels PyTorch's CPU backend also uses.
#include <oneapi/dnnl/dnnl.h>
