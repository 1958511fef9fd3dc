#include "PatchSampler.h"

#include "BSplineBasis.h"

#include <ATen/Parallel.h>

#include <array>
#include <cmath>

namespace impact
{
namespace
{
using basis::Taps;

// Image buffer of one channel: sizes and element strides in ITK axis order (x first).
template <int D>
struct Grid
{
  const float *          data;
  std::array<int64_t, D> size, stride;
};

template <int D>
Grid<D>
gridOf(const torch::Tensor & coefficients)
{
  Grid<D> g{ coefficients.const_data_ptr<float>(), {}, {} };
  for (int a = 0; a < D; ++a)
  {
    g.size[a] = coefficients.size(D - 1 - a);
    g.stride[a] = coefficients.stride(D - 1 - a);
  }
  return g;
}

// Value and index gradient at one point from per-axis taps (tx along x, ty along y, tz along z).
// Separable: x taps first, then y, then z, carrying the derivative partial sums along.
template <int D>
inline void
evaluate(const float * data, const Taps & tx, const Taps & ty, const Taps * tz, float * value, float * gradient)
{
  double v = 0, gx = 0, gy = 0, gz = 0;
  for (int kz = 0; kz < (D == 3 ? 4 : 1); ++kz)
  {
    const float * plane = D == 3 ? data + tz->offset[kz] : data;
    double        pv = 0, px = 0, py = 0;
    for (int ky = 0; ky < 4; ++ky)
    {
      const float * row = plane + ty.offset[ky];
      double        rv = 0, rx = 0;
      for (int kx = 0; kx < 4; ++kx)
      {
        const double c = row[tx.offset[kx]];
        rv += tx.w[kx] * c;
        rx += tx.dw[kx] * c;
      }
      pv += ty.w[ky] * rv;
      px += ty.w[ky] * rx;
      py += ty.dw[ky] * rv;
    }
    const double wz = D == 3 ? tz->w[kz] : 1.0;
    v += wz * pv;
    gx += wz * px;
    gy += wz * py;
    if (D == 3)
    {
      gz += tz->dw[kz] * pv;
    }
  }
  *value = static_cast<float>(v);
  if (gradient)
  {
    gradient[0] = static_cast<float>(gx);
    gradient[1] = static_cast<float>(gy);
    if (D == 3)
    {
      gradient[2] = static_cast<float>(gz);
    }
  }
}

// Continuous index of each centre: W (y - origin), row-major W.
template <int D>
std::array<double, D>
centreIndex(const double * y, const std::array<double, D * D> & w, const std::array<double, D> & origin)
{
  std::array<double, D> c{};
  for (int r = 0; r < D; ++r)
  {
    for (int k = 0; k < D; ++k)
    {
      c[r] += w[r * D + k] * (y[k] - origin[k]);
    }
  }
  return c;
}

template <int D>
void
sampleKernel(const Grid<D> &       grid,
             const Geometry &      geometry,
             const torch::Tensor & centres,
             const PatchLayout &   layout,
             float *               values,
             float *               gradient)
{
  const auto n = centres.size(0);
  const auto p = layout.voxels();
  const auto wTensor = geometry.worldToIndexMatrix().contiguous();
  std::array<double, D * D> w{};
  std::array<double, D>     origin{};
  std::copy_n(wTensor.const_data_ptr<double>(), D * D, w.begin());
  std::copy_n(geometry.origin.begin(), D, origin.begin());
  const double * y = centres.const_data_ptr<double>();
  const bool     aligned = !layout.axisOffsets.empty();
  const bool     perSample = layout.offsets.dim() == 3;
  const double * offsets = layout.offsets.const_data_ptr<double>();

  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    std::array<std::vector<Taps>, D> axisTaps;
    for (int64_t s = begin; s < end; ++s)
    {
      const auto c = centreIndex<D>(y + s * D, w, origin);
      float *    v = values + s * p;
      float *    g = gradient ? gradient + s * p * D : nullptr;
      if (aligned)
      {
        // Taps per patch axis: sum(size) weight sets instead of prod(size).
        for (int a = 0; a < D; ++a)
        {
          const auto & o = layout.axisOffsets[a];
          axisTaps[a].resize(o.size());
          for (size_t i = 0; i < o.size(); ++i)
          {
            axisTaps[a][i].set(c[a] + o[i], grid.size[a], grid.stride[a]);
          }
        }
        const int64_t nx = layout.size[0], ny = layout.size[1], nz = D == 3 ? layout.size[2] : 1;
        int64_t       q = 0;
        for (int64_t k = 0; k < nz; ++k)
        {
          for (int64_t j = 0; j < ny; ++j)
          {
            for (int64_t i = 0; i < nx; ++i, ++q)
            {
              evaluate<D>(grid.data, axisTaps[0][i], axisTaps[1][j], D == 3 ? &axisTaps[D - 1][k] : nullptr, v + q,
                          g ? g + q * D : nullptr);
            }
          }
        }
        continue;
      }
      const double * off = perSample ? offsets + s * p * D : offsets;
      std::array<Taps, D> t;
      for (int64_t q = 0; q < p; ++q)
      {
        for (int a = 0; a < D; ++a)
        {
          t[a].set(c[a] + off[q * D + a], grid.size[a], grid.stride[a]);
        }
        evaluate<D>(grid.data, t[0], t[1], D == 3 ? &t[D - 1] : nullptr, v + q, g ? g + q * D : nullptr);
      }
    }
  });
}
} // namespace

torch::Tensor
randomPlanes(int64_t n, torch::Generator & generator)
{
  auto u = torch::randn({ n, 3 }, generator, torch::kFloat64);
  auto v = torch::randn({ n, 3 }, generator, torch::kFloat64);
  u = u / u.norm(2, 1, true).clamp_min(1e-12);
  v = v - (v * u).sum(1, true) * u;
  v = v / v.norm(2, 1, true).clamp_min(1e-12);
  return torch::stack({ u, v }, 1);
}

torch::Tensor
principalPlanes(int64_t n, const std::vector<double> & direction, torch::Generator & generator)
{
  const auto axes = imageAxes(direction, 3);                            // (3, 3): row a = world direction of axis a
  const auto planes = torch::stack({ axes.index_select(0, torch::tensor({ 0, 1 })), // axial: x, y
                                     axes.index_select(0, torch::tensor({ 0, 2 })), // coronal: x, z
                                     axes.index_select(0, torch::tensor({ 1, 2 })) }); // sagittal: y, z
  return planes.index_select(0, torch::randint(3, { n }, generator, torch::kLong));
}

torch::Tensor
imageAxes(const std::vector<double> & direction, int d)
{
  const auto dim = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(direction.size()))));
  const auto m = torch::tensor(direction, torch::kFloat64).reshape({ dim, dim });
  return m.t().slice(0, 0, d).contiguous(); // column a of the direction is the world direction of axis a
}

int64_t
PatchLayout::voxels() const
{
  int64_t p = 1;
  for (auto s : size)
  {
    p *= s;
  }
  return p;
}

PatchLayout
patchLayout(const std::vector<int64_t> & patchSize,
            const std::vector<double> &  voxelSize,
            const torch::Tensor &        axes,
            const Geometry &             geometry)
{
  const auto d = static_cast<int64_t>(patchSize.size());
  const auto D = geometry.dim();
  TORCH_CHECK(static_cast<int64_t>(voxelSize.size()) == d && axes.size(-2) == d && axes.size(-1) == D,
              "patchLayout: patch size (", d, "), voxel size (", voxelSize.size(), ") and axes ", axes.sizes(),
              " disagree on the dimensions");
  // Local coordinates (P, d) in mm, x fastest, centred on the patch centre.
  std::vector<torch::Tensor> coords; // slowest axis first, for meshgrid
  for (int64_t a = d - 1; a >= 0; --a)
  {
    coords.push_back((torch::arange(patchSize[a], torch::kFloat64) - 0.5 * (patchSize[a] - 1)) * voxelSize[a]);
  }
  const auto                 grids = torch::meshgrid(coords, "ij");
  std::vector<torch::Tensor> xFirst(grids.rbegin(), grids.rend());
  const auto                 local = torch::stack(xFirst, -1).reshape({ -1, d });
  // World direction of each patch axis in index units: (d, D) or (N, d, D).
  const auto  toIndex = torch::matmul(axes.to(torch::kFloat64), geometry.worldToIndexMatrix().t());
  PatchLayout layout;
  layout.size = patchSize;
  layout.offsets = torch::matmul(local, toIndex).contiguous();
  if (toIndex.dim() == 2 && d == D)
  {
    const auto diagonal = toIndex.diagonal();
    if ((toIndex - torch::diag(diagonal)).abs().max().item<double>() <= 1e-12 * diagonal.abs().max().item<double>())
    {
      for (int64_t a = 0; a < d; ++a)
      {
        std::vector<double> o(patchSize[a]);
        for (int64_t i = 0; i < patchSize[a]; ++i)
        {
          o[i] = (i - 0.5 * (patchSize[a] - 1)) * voxelSize[a] * diagonal[a].item<double>();
        }
        layout.axisOffsets.push_back(std::move(o));
      }
    }
  }
  return layout;
}

PatchSamples
samplePatches(const torch::Tensor & coefficients,
              const Geometry &      geometry,
              const torch::Tensor & centres,
              const PatchLayout &   layout,
              bool                  withGradient)
{
  const int  D = geometry.dim();
  const auto n = centres.size(0);
  const auto p = layout.voxels();
  TORCH_CHECK(D == 2 || D == 3, "samplePatches: 2D or 3D images only, got ", D, "D");
  TORCH_CHECK(coefficients.dim() == D + 1 && coefficients.size(D) == 1 && coefficients.scalar_type() == torch::kFloat32,
              "samplePatches: coefficients must be float32 (*spatial, 1) with ", D, " spatial axes, got ",
              coefficients.sizes());
  TORCH_CHECK(centres.dim() == 2 && centres.size(1) == D && centres.scalar_type() == torch::kFloat64,
              "samplePatches: centres must be float64 (N, ", D, "), got ", centres.sizes());
  TORCH_CHECK((layout.offsets.dim() == 2 && layout.offsets.size(0) == p) ||
                (layout.offsets.dim() == 3 && layout.offsets.size(0) == n && layout.offsets.size(1) == p),
              "samplePatches: offsets must be (P, D) or (N, P, D) with P = ", p, ", N = ", n, ", got ",
              layout.offsets.sizes());
  const auto   coef = coefficients.contiguous();
  const auto   c = centres.contiguous();
  PatchSamples out;
  out.values = torch::empty({ n, p }, torch::kFloat32);
  if (withGradient)
  {
    out.indexGradient = torch::empty({ n, p, D }, torch::kFloat32);
  }
  float * g = withGradient ? out.indexGradient.mutable_data_ptr<float>() : nullptr;
  if (D == 3)
  {
    sampleKernel<3>(gridOf<3>(coef), geometry, c, layout, out.values.mutable_data_ptr<float>(), g);
  }
  else
  {
    sampleKernel<2>(gridOf<2>(coef), geometry, c, layout, out.values.mutable_data_ptr<float>(), g);
  }
  return out;
}

torch::Tensor
chainPatchGradient(const torch::Tensor & patchGradient, const torch::Tensor & indexGradient, const Geometry & geometry)
{
  const int  D = geometry.dim();
  const auto n = indexGradient.size(0);
  const auto p = indexGradient.size(1);
  TORCH_CHECK(indexGradient.dim() == 3 && indexGradient.size(2) == D, "chainPatchGradient: index gradient must be ",
              "(N, P, ", D, "), got ", indexGradient.sizes());
  TORCH_CHECK(patchGradient.numel() == n * p, "chainPatchGradient: patch gradient has ", patchGradient.numel(),
              " values for (N, P) = (", n, ", ", p, ")");
  const auto     dp = patchGradient.to(torch::kFloat32).contiguous();
  const auto     ig = indexGradient.contiguous();
  const auto     w = geometry.worldToIndexMatrix().contiguous();
  auto           out = torch::empty({ n, D }, torch::kFloat64);
  const float *  a = dp.const_data_ptr<float>();
  const float *  b = ig.const_data_ptr<float>();
  const double * wm = w.const_data_ptr<double>();
  double *       o = out.mutable_data_ptr<double>();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s)
    {
      double gi[3] = { 0, 0, 0 }; // dS/d(index)
      for (int64_t q = 0; q < p; ++q)
      {
        const double dq = a[s * p + q];
        for (int k = 0; k < D; ++k)
        {
          gi[k] += dq * b[(s * p + q) * D + k];
        }
      }
      for (int c = 0; c < D; ++c) // index = W (y - origin): dS/dy_c = sum_k dS/dindex_k W[k][c]
      {
        double v = 0;
        for (int k = 0; k < D; ++k)
        {
          v += gi[k] * wm[k * D + c];
        }
        o[s * D + c] = v;
      }
    }
  });
  return out;
}

} // namespace impact
