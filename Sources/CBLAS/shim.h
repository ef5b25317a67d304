// OpenBLAS's CBLAS interface (Debian: libopenblas-dev). Its cblas.h also declares
// openblas_set_num_threads, which the engine uses to keep BLAS single-threaded inside its own pool.
#include <cblas.h>
#include <stddef.h>

// LAPACK ships inside OpenBLAS without a C header here. Symmetric eigendecomposition (divide and
// conquer), for the matrix square root in FID. The trailing lengths are gfortran's hidden
// CHARACTER arguments.
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_length, size_t uplo_length);

// Singular value decomposition (divide and conquer), for FedSVD's refactorisation of B·A.
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u, const int *ldu,
             double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info, size_t jobz_length);
