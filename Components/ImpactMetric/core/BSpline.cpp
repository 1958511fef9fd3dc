#include "BSpline.h"

#include <vector>

#include <ATen/Parallel.h>

#include <array>
#include <cmath>

namespace impact
{
namespace
{
// Pole of the cubic B-spline prefilter (Unser 1993).
const double kPole = std::sqrt(3.0) - 2.0;

// Filters along dim 0 of a (N, rest) view in place: causal then anti-causal recursion.
void
prefilterAxis(torch::Tensor c)
{
  const auto n = c.size(0);
  if (n < 2)
  {
    return;
  }
  const double z = kPole;
  c.mul_((1.0 - z) * (1.0 - 1.0 / z));
  // Causal initialisation for mirror boundaries, truncated where z^k is negligible.
  const int64_t horizon = std::min<int64_t>(n, static_cast<int64_t>(std::ceil(std::log(1e-10) / std::log(std::abs(z)))));
  auto sum = c[0].clone();
  double zk = z;
  for (int64_t k = 1; k < horizon; ++k, zk *= z)
  {
    sum.add_(c[k], zk);
  }
  if (horizon == n) // exact mirror sum for short axes
  {
    const double z2n = std::pow(z, 2 * n - 2);
    sum = c[0].clone();
    double zi = z, zr = std::pow(z, 2 * n - 3);
    for (int64_t k = 1; k < n - 1; ++k, zi *= z, zr /= z)
    {
      sum.add_(c[k], zi + zr);
    }
    sum.add_(c[n - 1], std::pow(z, n - 1));
    sum.div_(1.0 - z2n);
  }
  c[0].copy_(sum);
  for (int64_t k = 1; k < n; ++k)
  {
    c[k].add_(c[k - 1], z);
  }
  c[n - 1].copy_((c[n - 1] + z * c[n - 2]) * (z / (z * z - 1.0)));
  for (int64_t k = n - 2; k >= 0; --k)
  {
    c[k].copy_((c[k + 1] - c[k]) * z);
  }
}

inline int64_t
mirror(int64_t i, int64_t n)
{
  if (n == 1)
  {
    return 0;
  }
  const int64_t period = 2 * n - 2;
  i = ((i % period) + period) % period;
  return i < n ? i : period - i;
}

// Weights of the 4 taps around t in [0, 1), and their derivatives.
inline void
cubicWeights(double t, double * w, double * dw)
{
  const double t2 = t * t, t3 = t2 * t, s = 1.0 - t;
  w[0] = s * s * s / 6.0;
  w[1] = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0;
  w[2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0;
  w[3] = t3 / 6.0;
  dw[0] = -0.5 * s * s;
  dw[1] = 1.5 * t2 - 2.0 * t;
  dw[2] = -1.5 * t2 + t + 0.5;
  dw[3] = 0.5 * t2;
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
        cubicWeights(x - fl, w[a].data(), dw[a].data());
        for (int k = 0; k < 4; ++k)
        {
          off[a][k] = mirror(static_cast<int64_t>(fl) - 1 + k, size[a]) * stride[a];
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
} // namespace

torch::Tensor
bsplineCoefficients(const torch::Tensor & image)
{
  TORCH_CHECK(image.dim() >= 2, "bsplineCoefficients expects (*spatial, C), got ", image.sizes());
  auto       c = image.to(torch::kFloat32).contiguous().clone();
  const auto spatial = image.dim() - 1;
  for (int64_t axis = 0; axis < spatial; ++axis)
  {
    auto moved = c.movedim(axis, 0);
    auto work = moved.contiguous().view({ moved.size(0), -1 });
    prefilterAxis(work);
    c = work.view(moved.sizes()).movedim(0, axis).contiguous();
  }
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
