#include "BSpline.h"

#include "BSplineBasis.h"

#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <vector>

namespace impact
{
namespace
{
// Pole of the cubic B-spline prefilter (Unser 1993).
const double kPole = std::sqrt(3.0) - 2.0;

// Filters `lines` lines of n samples in place: causal then anti-causal recursion with mirror
// boundaries. Sample k of line l is at data[k * step + l] (lines are contiguous, samples strided),
// so the inner loops run over adjacent lines and vectorise. Computed in double.
void
prefilterLines(float * data, int64_t n, int64_t step, int64_t lines, std::vector<double> & work)
{
  const double z = kPole;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  work.resize(static_cast<size_t>(n * lines));
  double * c = work.data();
  for (int64_t k = 0; k < n; ++k)
  {
    for (int64_t l = 0; l < lines; ++l)
    {
      c[k * lines + l] = gain * data[k * step + l];
    }
  }
  // Causal initialisation: sum_k z^k c[k], truncated where z^k < 1e-10; exact mirror sum for short axes.
  const int64_t horizon = std::min<int64_t>(n, static_cast<int64_t>(std::ceil(std::log(1e-10) / std::log(-z))));
  std::vector<double> weight(static_cast<size_t>(n), 0.0);
  if (horizon < n)
  {
    double zk = 1.0;
    for (int64_t k = 0; k < horizon; ++k, zk *= z)
    {
      weight[k] = zk;
    }
  }
  else
  {
    const double z2n = std::pow(z, 2 * n - 2);
    weight[0] = 1.0 / (1.0 - z2n);
    double zi = z, zr = std::pow(z, 2 * n - 3);
    for (int64_t k = 1; k < n - 1; ++k, zi *= z, zr /= z)
    {
      weight[k] = (zi + zr) / (1.0 - z2n);
    }
    weight[n - 1] = std::pow(z, n - 1) / (1.0 - z2n);
  }
  std::vector<double> first(static_cast<size_t>(lines), 0.0);
  for (int64_t k = 0; k < horizon; ++k)
  {
    for (int64_t l = 0; l < lines; ++l)
    {
      first[l] += weight[k] * c[k * lines + l];
    }
  }
  std::copy(first.begin(), first.end(), c);
  for (int64_t k = 1; k < n; ++k)
  {
    for (int64_t l = 0; l < lines; ++l)
    {
      c[k * lines + l] += z * c[(k - 1) * lines + l];
    }
  }
  for (int64_t l = 0; l < lines; ++l)
  {
    c[(n - 1) * lines + l] = (c[(n - 1) * lines + l] + z * c[(n - 2) * lines + l]) * (z / (z * z - 1.0));
  }
  for (int64_t k = n - 2; k >= 0; --k)
  {
    for (int64_t l = 0; l < lines; ++l)
    {
      c[k * lines + l] = (c[(k + 1) * lines + l] - c[k * lines + l]) * z;
    }
  }
  for (int64_t k = 0; k < n; ++k)
  {
    for (int64_t l = 0; l < lines; ++l)
    {
      data[k * step + l] = static_cast<float>(c[k * lines + l]);
    }
  }
}

// Filters a contiguous (outer, n, inner) tensor along its middle axis, in parallel over outer
// indices and blocks of inner ones.
void
prefilterAxis(float * data, int64_t outer, int64_t n, int64_t inner)
{
  if (n < 2)
  {
    return;
  }
  constexpr int64_t block = 64;
  const int64_t     blocks = (inner + block - 1) / block;
  at::parallel_for(0, outer * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> work;
    for (int64_t job = begin; job < end; ++job)
    {
      const int64_t o = job / blocks, b = job % blocks;
      const int64_t first = b * block, lines = std::min(block, inner - first);
      prefilterLines(data + o * n * inner + first, n, inner, lines, work);
    }
  });
}

template <int D, typename IndexT>
void
sampleKernel(const torch::Tensor & coefficients,
             const torch::Tensor & index,
             torch::Tensor &       values,
             torch::Tensor *       gradient)
{
  const auto     channels = coefficients.size(D);
  const float *  coef = coefficients.const_data_ptr<float>();
  const IndexT * idx = index.const_data_ptr<IndexT>();
  float *        val = values.mutable_data_ptr<float>();
  float *        grad = gradient ? gradient->mutable_data_ptr<float>() : nullptr;
  // Sizes and element strides in ITK axis order (x first).
  std::array<int64_t, D> size{}, stride{};
  for (int a = 0; a < D; ++a)
  {
    size[a] = coefficients.size(D - 1 - a);
    stride[a] = coefficients.stride(D - 1 - a);
  }
  const auto points = index.size(0);
  // Separable evaluation: x taps first, then y, then z, carrying the derivative partial sums along.
  // 4^D taps cost about 3x4^(D-1) + ... multiply-adds per channel instead of 4^D x (D+1) x D.
  at::parallel_for(0, points, 256, [&](int64_t begin, int64_t end) {
    std::array<std::array<double, 4>, D>  w{}, dw{};
    std::array<std::array<int64_t, 4>, D> off{};
    // Per channel: [value, d/dx] along x; [value, d/dx, d/dy] after y; D + 1 sums after z (3D).
    std::vector<double> rx(2 * channels), ry(3 * channels), rz((D + 1) * channels);
    for (int64_t p = begin; p < end; ++p)
    {
      for (int a = 0; a < D; ++a)
      {
        const double x = static_cast<double>(idx[p * D + a]);
        const double fl = std::floor(x);
        basis::cubicWeights(x - fl, w[a].data(), dw[a].data());
        for (int k = 0; k < 4; ++k)
        {
          off[a][k] = basis::mirror(static_cast<int64_t>(fl) - 1 + k, size[a]) * stride[a];
        }
      }
      const int outer = D == 3 ? 4 : 1;
      std::fill(rz.begin(), rz.end(), 0.0);
      for (int kz = 0; kz < outer; ++kz)
      {
        std::fill(ry.begin(), ry.end(), 0.0);
        for (int ky = 0; ky < 4; ++ky)
        {
          std::fill(rx.begin(), rx.end(), 0.0);
          const float * row = coef + off[1][ky] + (D == 3 ? off[2][kz] : 0);
          for (int kx = 0; kx < 4; ++kx)
          {
            const float * c = row + off[0][kx];
            for (int64_t ch = 0; ch < channels; ++ch)
            {
              rx[2 * ch] += w[0][kx] * c[ch];
              rx[2 * ch + 1] += dw[0][kx] * c[ch];
            }
          }
          for (int64_t ch = 0; ch < channels; ++ch)
          {
            ry[3 * ch] += w[1][ky] * rx[2 * ch];
            ry[3 * ch + 1] += w[1][ky] * rx[2 * ch + 1];
            ry[3 * ch + 2] += dw[1][ky] * rx[2 * ch];
          }
        }
        const double wz = D == 3 ? w[D - 1][kz] : 1.0;
        for (int64_t ch = 0; ch < channels; ++ch)
        {
          double * r = &rz[(D + 1) * ch];
          r[0] += wz * ry[3 * ch];     // value
          r[1] += wz * ry[3 * ch + 1]; // d/dx
          r[2] += wz * ry[3 * ch + 2]; // d/dy
          if (D == 3)
          {
            r[3] += dw[D - 1][kz] * ry[3 * ch]; // d/dz
          }
        }
      }
      float * v = val + p * channels;
      float * g = grad ? grad + p * channels * D : nullptr;
      for (int64_t ch = 0; ch < channels; ++ch)
      {
        v[ch] = static_cast<float>(rz[(D + 1) * ch]);
        if (g)
        {
          for (int a = 0; a < D; ++a)
          {
            g[ch * D + a] = static_cast<float>(rz[(D + 1) * ch + 1 + a]);
          }
        }
      }
    }
  });
}
// One separable stage of a grid resample: along the middle axis of a contiguous (outer, n, inner)
// tensor, output sample j = sum_k w[j][k] input[offset[j][k]]; returns (outer, m, inner).
torch::Tensor
resampleAxis(const torch::Tensor & input, const std::vector<double> & positions)
{
  const int64_t outer = input.size(0), n = input.size(1), inner = input.size(2);
  const auto    m = static_cast<int64_t>(positions.size());
  std::vector<basis::Taps> taps(positions.size());
  for (size_t j = 0; j < positions.size(); ++j)
  {
    taps[j].set(positions[j], n, inner);
  }
  auto          out = torch::empty({ outer, m, inner }, torch::kFloat32);
  const float * src = input.const_data_ptr<float>();
  float *       dst = out.mutable_data_ptr<float>();
  at::parallel_for(0, outer * m, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job)
    {
      const int64_t o = job / m, j = job % m;
      const float * s = src + o * n * inner;
      float *       d = dst + (o * m + j) * inner;
      const auto &  t = taps[j];
      for (int64_t l = 0; l < inner; ++l)
      {
        d[l] = static_cast<float>(t.w[0] * s[t.offset[0] + l] + t.w[1] * s[t.offset[1] + l] +
                                  t.w[2] * s[t.offset[2] + l] + t.w[3] * s[t.offset[3] + l]);
      }
    }
  });
  return out;
}
} // namespace

torch::Tensor
bsplineResample(const torch::Tensor & coefficients, const std::vector<std::vector<double>> & positions)
{
  const auto d = static_cast<int64_t>(positions.size());
  TORCH_CHECK(coefficients.dim() == d + 1 && coefficients.scalar_type() == torch::kFloat32,
              "bsplineResample: coefficients must be float32 (*spatial, C) with ", d, " spatial axes, got ",
              coefficients.sizes());
  auto out = coefficients.contiguous();
  for (int64_t a = 0; a < d; ++a) // ITK axis a is tensor axis d - 1 - a
  {
    const auto axis = d - 1 - a;
    auto       shape = out.sizes().vec();
    const auto outer = c10::multiply_integers(shape.begin(), shape.begin() + axis);
    const auto inner = c10::multiply_integers(shape.begin() + axis + 1, shape.end());
    out = resampleAxis(out.view({ outer, shape[axis], inner }), positions[a]);
    shape[axis] = static_cast<int64_t>(positions[a].size());
    out = out.view(shape);
  }
  return out;
}

void
bsplineCoefficientsInPlace(torch::Tensor & image)
{
  TORCH_CHECK(image.dim() >= 2 && image.scalar_type() == torch::kFloat32 && image.is_contiguous() && image.is_cpu(),
              "bsplineCoefficientsInPlace expects a contiguous float32 CPU tensor (*spatial, C), got ", image.sizes());
  float *    data = image.mutable_data_ptr<float>();
  const auto spatial = image.dim() - 1;
  for (int64_t axis = 0; axis < spatial; ++axis)
  {
    int64_t outer = 1, inner = 1;
    for (int64_t a = 0; a < axis; ++a)
    {
      outer *= image.size(a);
    }
    for (int64_t a = axis + 1; a < image.dim(); ++a)
    {
      inner *= image.size(a);
    }
    prefilterAxis(data, outer, image.size(axis), inner);
  }
}

torch::Tensor
bsplineCoefficients(const torch::Tensor & image)
{
  TORCH_CHECK(image.dim() >= 2, "bsplineCoefficients expects (*spatial, C), got ", image.sizes());
  auto c = image.to(torch::kCPU, torch::kFloat32).contiguous().clone();
  bsplineCoefficientsInPlace(c);
  return c;
}

std::tuple<torch::Tensor, torch::Tensor>
bsplineSample(const torch::Tensor & coefficients, const torch::Tensor & index, bool withGradient)
{
  const auto d = index.dim() == 2 ? index.size(1) : -1;
  TORCH_CHECK(d == 2 || d == 3, "bsplineSample: index must be (M, 2) or (M, 3), got ", index.sizes());
  TORCH_CHECK(coefficients.dim() == d + 1 && coefficients.scalar_type() == torch::kFloat32,
              "bsplineSample: coefficients must be float32 (*spatial, C) with ", d, " spatial axes, got ",
              coefficients.sizes());
  const auto coef = coefficients.contiguous();
  const auto idx = index.scalar_type() == torch::kFloat64 ? index.contiguous() : index.to(torch::kFloat32).contiguous();
  const auto channels = coef.size(d);
  auto       values = torch::zeros({ index.size(0), channels }, torch::kFloat32);
  torch::Tensor gradient;
  if (withGradient)
  {
    gradient = torch::zeros({ index.size(0), channels, d }, torch::kFloat32);
  }
  auto * g = withGradient ? &gradient : nullptr;
  const bool f64 = idx.scalar_type() == torch::kFloat64;
  if (d == 3)
  {
    f64 ? sampleKernel<3, double>(coef, idx, values, g) : sampleKernel<3, float>(coef, idx, values, g);
  }
  else
  {
    f64 ? sampleKernel<2, double>(coef, idx, values, g) : sampleKernel<2, float>(coef, idx, values, g);
  }
  return { values, gradient };
}

} // namespace impact
