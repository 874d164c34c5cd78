// float32 kernels of the simulated device, written against Paddle's C kernel
// API (paddle/phi/capi: only PD_* C symbols are imported, so the plugin does
// not depend on Paddle's C++ ABI).
//
// The subset is deliberate: matmul, add, relu and conv2d run "on the device";
// every other op (softmax, batch_norm, pool2d, depthwise_conv2d...) and every
// other dtype has no kernel here and falls back to Paddle's CPU kernels.
// Each execution is traced (see simdevice.h), so tests know what really ran.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "paddle/phi/capi/all.h"
#include "simdevice.h"

namespace simdevice {

void Trace(const char* name, const char* dtype) {
  static std::mutex mutex;
  static FILE* sink = [] () -> FILE* {
    const char* target = std::getenv("SIMDEV_TRACE");
    if (target == nullptr || *target == '\0') return nullptr;
    if (std::strcmp(target, "stderr") == 0) return stderr;
    return std::fopen(target, "a");
  }();
  if (sink == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(sink, "simdevice %s %s %s\n", SIMDEV_TYPE, name, dtype);
  std::fflush(sink);
}

namespace {

using Dims = std::vector<int64_t>;

int64_t Product(const Dims& dims, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= dims[i];
  return n;
}

// C[m][n] (+)= sum_k A[m][k] * B[k][n] with element strides, so transposed
// operands need no copy. Loop order keeps the inner loop contiguous in B and C
// for the common (non-transposed) case.
void Gemm(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t b_row, int64_t b_col, float* c,
          int64_t m, int64_t n, int64_t k) {
  std::fill(c, c + m * n, 0.0f);
  for (int64_t i = 0; i < m; ++i) {
    float* c_row = c + i * n;
    for (int64_t p = 0; p < k; ++p) {
      const float av = a[i * a_row + p * a_col];
      if (av == 0.0f) continue;
      const float* b_row_ptr = b + p * b_row;
      if (b_col == 1) {
        for (int64_t j = 0; j < n; ++j) c_row[j] += av * b_row_ptr[j];
      } else {
        for (int64_t j = 0; j < n; ++j) c_row[j] += av * b_row_ptr[j * b_col];
      }
    }
  }
}

// Offset of broadcast index `out_index` into a tensor of `dims` right-aligned
// against `out_dims` (numpy rules, which Paddle's default axis=-1 follows).
int64_t BroadcastOffset(const Dims& out_dims, const Dims& dims, int64_t out_index) {
  int64_t offset = 0, stride = 1;
  const size_t shift = out_dims.size() - dims.size();
  for (size_t axis = out_dims.size(); axis-- > 0;) {
    const int64_t coord = out_index % out_dims[axis];
    out_index /= out_dims[axis];
    if (axis >= shift) {
      const int64_t size = dims[axis - shift];
      if (size != 1) offset += coord * stride;
      stride *= size;
    }
  }
  return offset;
}

}  // namespace

template <typename T>
void ReluKernel(const phi::Context& dev_ctx, const phi::DenseTensor& x, phi::DenseTensor* out) {
  Trace("relu", "float32");
  const T* in = x.data<T>();
  T* result = dev_ctx.template Alloc<T>(out);
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) result[i] = in[i] > T(0) ? in[i] : T(0);
}

template <typename T>
void AddKernel(const phi::Context& dev_ctx, const phi::DenseTensor& x, const phi::DenseTensor& y,
               phi::DenseTensor* out) {
  Trace("add", "float32");
  const T* a = x.data<T>();
  const T* b = y.data<T>();
  T* result = dev_ctx.template Alloc<T>(out);
  const Dims out_dims = out->dims(), x_dims = x.dims(), y_dims = y.dims();
  const int64_t n = out->numel();
  if (x_dims == out_dims && y_dims == out_dims) {
    for (int64_t i = 0; i < n; ++i) result[i] = a[i] + b[i];
    return;
  }
  // Fast path for the bias add of a linear layer: y is [..1.., C] against out's last axis C.
  bool row_bias = x_dims == out_dims && !y_dims.empty() && !out_dims.empty() && y_dims.back() == out_dims.back();
  for (size_t i = 0; row_bias && i + 1 < y_dims.size(); ++i) row_bias = y_dims[i] == 1;
  if (row_bias) {
    const int64_t cols = y.numel();
    for (int64_t i = 0; i < n; ++i) result[i] = a[i] + b[i % cols];
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    result[i] = a[BroadcastOffset(out_dims, x_dims, i)] + b[BroadcastOffset(out_dims, y_dims, i)];
}

template <typename T>
void MatmulKernel(const phi::Context& dev_ctx, const phi::DenseTensor& x, const phi::DenseTensor& y, bool transpose_x,
                  bool transpose_y, phi::DenseTensor* out) {
  Trace("matmul", "float32");
  Dims xd = x.dims(), yd = y.dims();
  // Rank-1 operands act as a row (x) or a column (y) vector, as in numpy.
  if (xd.size() == 1) {
    xd.insert(xd.begin(), 1);
    transpose_x = false;
  }
  if (yd.size() == 1) {
    yd.push_back(1);
    transpose_y = false;
  }
  const size_t xr = xd.size(), yr = yd.size();
  const int64_t m = transpose_x ? xd[xr - 1] : xd[xr - 2];
  const int64_t k = transpose_x ? xd[xr - 2] : xd[xr - 1];
  const int64_t n = transpose_y ? yd[yr - 2] : yd[yr - 1];
  const Dims x_batch(xd.begin(), xd.end() - 2), y_batch(yd.begin(), yd.end() - 2);
  Dims batch(std::max(x_batch.size(), y_batch.size()), 1);
  for (size_t i = 0; i < batch.size(); ++i) {
    const size_t from_end = batch.size() - 1 - i;
    const int64_t xs = from_end < x_batch.size() ? x_batch[x_batch.size() - 1 - from_end] : 1;
    const int64_t ys = from_end < y_batch.size() ? y_batch[y_batch.size() - 1 - from_end] : 1;
    batch[i] = std::max(xs, ys);
  }
  const T* a = x.data<T>();
  const T* b = y.data<T>();
  T* c = dev_ctx.template Alloc<T>(out);
  const int64_t batches = Product(batch, 0, batch.size());
  const int64_t x_mat = xd[xr - 2] * xd[xr - 1], y_mat = yd[yr - 2] * yd[yr - 1];
  // Strides of one element along (row, column) of op(A) and op(B).
  const int64_t a_row = transpose_x ? 1 : k, a_col = transpose_x ? m : 1;
  const int64_t b_row = transpose_y ? 1 : n, b_col = transpose_y ? k : 1;
  for (int64_t i = 0; i < batches; ++i) {
    const int64_t xo = x_batch.empty() ? 0 : BroadcastOffset(batch, x_batch, i);
    const int64_t yo = y_batch.empty() ? 0 : BroadcastOffset(batch, y_batch, i);
    Gemm(a + xo * x_mat, a_row, a_col, b + yo * y_mat, b_row, b_col, c + i * m * n, m, n, k);
  }
}

template <typename T>
void Conv2dKernel(const phi::Context& dev_ctx, const phi::DenseTensor& input, const phi::DenseTensor& filter,
                  const std::vector<int>& strides, const std::vector<int>& paddings,
                  const std::string& padding_algorithm, const std::vector<int>& dilations_in, int groups,
                  const std::string& data_format, phi::DenseTensor* out) {
  Trace("conv2d", "float32");
  const bool nhwc = data_format == "NHWC";
  const Dims in = input.dims(), fd = filter.dims(), od = out->dims();
  const int64_t batch = in[0];
  const int64_t channels = nhwc ? in[3] : in[1], height = nhwc ? in[1] : in[2], width = nhwc ? in[2] : in[3];
  const int64_t out_c = fd[0], kh = fd[2], kw = fd[3];
  const int64_t out_h = nhwc ? od[1] : od[2], out_w = nhwc ? od[2] : od[3];
  std::vector<int> dilations = dilations_in;
  // Paddings as [top, bottom, left, right], resolved the way Paddle does.
  int64_t pad_top = 0, pad_left = 0;
  if (padding_algorithm == "SAME") {
    const int64_t sizes[2] = {height, width}, kernel[2] = {kh, kw};
    int64_t pads[2];
    for (int i = 0; i < 2; ++i) {
      const int64_t out_size = (sizes[i] + strides[i] - 1) / strides[i];
      const int64_t pad_sum = std::max<int64_t>((out_size - 1) * strides[i] + kernel[i] - sizes[i], 0);
      pads[i] = pad_sum / 2;
    }
    pad_top = pads[0];
    pad_left = pads[1];
    dilations = {1, 1};
  } else if (padding_algorithm != "VALID") {
    pad_top = paddings[0];
    pad_left = paddings.size() == 4 ? paddings[2] : paddings[1];
  }
  const int64_t group_in = channels / groups, group_out = out_c / groups;
  const int64_t patch = group_in * kh * kw, pixels = out_h * out_w;
  const T* x = input.data<T>();
  const T* w = filter.data<T>();
  T* y = dev_ctx.template Alloc<T>(out);
  std::vector<T> columns(patch * pixels), result(group_out * pixels);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      // im2col: one column of the patch matrix per output pixel.
      for (int64_t c = 0; c < group_in; ++c) {
        const int64_t channel = g * group_in + c;
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            T* row = columns.data() + ((c * kh + i) * kw + j) * pixels;
            for (int64_t oh = 0; oh < out_h; ++oh) {
              const int64_t ih = oh * strides[0] - pad_top + i * dilations[0];
              for (int64_t ow = 0; ow < out_w; ++ow) {
                const int64_t iw = ow * strides[1] - pad_left + j * dilations[1];
                T value = 0;
                if (ih >= 0 && ih < height && iw >= 0 && iw < width) {
                  value = nhwc ? x[((b * height + ih) * width + iw) * channels + channel]
                               : x[((b * channels + channel) * height + ih) * width + iw];
                }
                row[oh * out_w + ow] = value;
              }
            }
          }
        }
      }
      Gemm(w + g * group_out * patch, patch, 1, columns.data(), pixels, 1, result.data(), group_out, pixels, patch);
      for (int64_t oc = 0; oc < group_out; ++oc) {
        const int64_t channel = g * group_out + oc;
        for (int64_t p = 0; p < pixels; ++p) {
          const T value = result[oc * pixels + p];
          if (nhwc) {
            y[(b * pixels + p) * out_c + channel] = value;
          } else {
            y[(b * out_c + channel) * pixels + p] = value;
          }
        }
      }
    }
  }
}

}  // namespace simdevice

// The backend token must equal the device type, which is chosen at build time:
// expand SIMDEV_BACKEND before PD_BUILD_PHI_KERNEL stringifies/pastes it.
#define SIMDEV_KERNEL_(name, backend, fn) PD_BUILD_PHI_KERNEL(name, backend, ALL_LAYOUT, fn, float) {}
#define SIMDEV_KERNEL(name, fn) SIMDEV_KERNEL_(name, SIMDEV_BACKEND, fn)

SIMDEV_KERNEL(relu, simdevice::ReluKernel)
SIMDEV_KERNEL(add, simdevice::AddKernel)
SIMDEV_KERNEL(matmul, simdevice::MatmulKernel)
SIMDEV_KERNEL(conv2d, simdevice::Conv2dKernel)
