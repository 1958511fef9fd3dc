#include "Mind.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cctype>
#include <map>
#include <stdexcept>

namespace impact
{
namespace
{
using Offset = std::vector<int64_t>; // per tensor axis (z, y, x in 3D)

// The 2 dim axis offsets ±d e_k in tensor order, negative first.
std::vector<Offset>
neighbourhood(int dimension, int dilation)
{
  std::vector<Offset> out;
  for (int axis = 0; axis < dimension; ++axis)
  {
    for (int sign : { -1, 1 })
    {
      Offset offset(dimension, 0);
      offset[axis] = sign * dilation;
      out.push_back(offset);
    }
  }
  return out;
}

// The offset pairs (a, b) whose patch distance forms one channel each, in the TorchScript export's order.
std::vector<std::pair<Offset, Offset>>
pairs(int dimension, int dilation, bool ssc)
{
  const auto                             hood = neighbourhood(dimension, dilation);
  std::vector<std::pair<Offset, Offset>> out;
  if (!ssc)
  {
    for (const auto & n : hood)
    {
      out.emplace_back(Offset(dimension, 0), n);
    }
    return out;
  }
  for (size_t i = 0; i < hood.size(); ++i)
  {
    for (size_t j = i + 1; j < hood.size(); ++j)
    {
      int64_t squared = 0;
      for (int a = 0; a < dimension; ++a)
      {
        squared += (hood[i][a] - hood[j][a]) * (hood[i][a] - hood[j][a]);
      }
      if (squared == 2 * dilation * dilation)
      {
        out.emplace_back(hood[i], hood[j]);
      }
    }
  }
  return out;
}

bool
positiveInteger(const std::string & s)
{
  return !s.empty() && s.size() < 4 && std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isdigit(ch); }) &&
         std::stoi(s) > 0;
}

// Mean over a box of k voxels per spatial axis, stride 1, no padding: one pass per axis, each a sum
// of k shifted views (vectorised element-wise adds; pooling kernels are slow on small patches).
torch::Tensor
boxMean(torch::Tensor t, int dimension, int64_t k)
{
  for (int a = 0; a < dimension; ++a)
  {
    const auto axis = 2 + a;
    const auto length = t.size(axis) - k + 1;
    auto       sum = t.narrow(axis, 0, length).clone();
    for (int64_t j = 1; j < k; ++j)
    {
      sum.add_(t.narrow(axis, j, length));
    }
    t = sum;
  }
  return t.div_(static_cast<double>(k) * (dimension == 3 ? k * k : k));
}


// The fused path, for batches of small patches (Jacobian mode): one loop per image over the
// same formula, forward and analytic backward, parallel over the batch. Index arithmetic replaces
// the padded copy (replicate padding = clamped indices).
struct PatchKernel
{
  int64_t                             Z{}, Y{}, X{}; // image size (Z = 1 in 2D)
  int64_t                             rz{}, r{};     // box radius along z (0 in 2D) and in-plane
  std::vector<std::array<int64_t, 3>> a, b;          // per channel: the pair's offsets (z, y, x)

  int64_t
  channels() const
  {
    return static_cast<int64_t>(a.size());
  }
  int64_t
  voxels() const
  {
    return Z * Y * X;
  }
  int64_t
  extended() const
  {
    return (Z + 2 * rz) * (Y + 2 * r) * (X + 2 * r);
  }

  // S_k(y) = (I(y + a_k) - I(y + b_k))^2 over the extended region y in [-r, n + r), clamped reads.
  template <typename T>
  void
  differences(const T * image, T * diff, T * square) const
  {
    const int64_t Ez = Z + 2 * rz, Ey = Y + 2 * r, Ex = X + 2 * r;
    auto          clamp = [](int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); };
    for (int64_t k = 0; k < channels(); ++k)
    {
      for (int64_t z = 0; z < Ez; ++z)
      {
        const auto za = clamp(z - rz + a[k][0], Z) * Y, zb = clamp(z - rz + b[k][0], Z) * Y;
        for (int64_t y = 0; y < Ey; ++y)
        {
          const auto ya = (za + clamp(y - r + a[k][1], Y)) * X, yb = (zb + clamp(y - r + b[k][1], Y)) * X;
          T *        dRow = diff + ((k * Ez + z) * Ey + y) * Ex;
          T *        sRow = square + ((k * Ez + z) * Ey + y) * Ex;
          for (int64_t x = 0; x < Ex; ++x)
          {
            const T d = image[ya + clamp(x - r + a[k][2], X)] - image[yb + clamp(x - r + b[k][2], X)];
            dRow[x] = d;
            sRow[x] = d * d;
          }
        }
      }
    }
  }

  // D_k(x) = mean of S_k over the box around x: separable sums, extended -> image size.
  template <typename T>
  void
  boxMean(const T * square, T * scratch, T * out) const
  {
    const int64_t Ez = Z + 2 * rz, Ey = Y + 2 * r, Ex = X + 2 * r;
    const T       norm = T(1) / static_cast<T>((2 * rz + 1) * (2 * r + 1) * (2 * r + 1));
    T *           alongX = scratch;                  // (K, Ez, Ey, X)
    T *           alongY = scratch + channels() * Ez * Ey * X; // (K, Ez, Y, X)
    for (int64_t row = 0; row < channels() * Ez * Ey; ++row)
    {
      for (int64_t x = 0; x < X; ++x)
      {
        T sum = 0;
        for (int64_t j = 0; j <= 2 * r; ++j)
        {
          sum += square[row * Ex + x + j];
        }
        alongX[row * X + x] = sum;
      }
    }
    for (int64_t kz = 0; kz < channels() * Ez; ++kz)
    {
      for (int64_t y = 0; y < Y; ++y)
      {
        for (int64_t x = 0; x < X; ++x)
        {
          T sum = 0;
          for (int64_t j = 0; j <= 2 * r; ++j)
          {
            sum += alongX[(kz * Ey + y + j) * X + x];
          }
          alongY[(kz * Y + y) * X + x] = sum;
        }
      }
    }
    const int64_t plane = Y * X;
    for (int64_t k = 0; k < channels(); ++k)
    {
      for (int64_t z = 0; z < Z; ++z)
      {
        for (int64_t i = 0; i < plane; ++i)
        {
          T sum = 0;
          for (int64_t j = 0; j <= 2 * rz; ++j)
          {
            sum += alongY[(k * Ez + z + j) * plane + i];
          }
          out[(k * Z + z) * plane + i] = sum * norm;
        }
      }
    }
  }

  // The transpose of boxMean: dS (K, extended) from dD (K, P); every S voxel of a box receives
  // dD / |box|. Separable "full" sums, image size -> extended.
  template <typename T>
  void
  boxMeanTranspose(const T * dD, T * scratch, T * dS) const
  {
    const int64_t Ez = Z + 2 * rz, Ey = Y + 2 * r, Ex = X + 2 * r, K = channels();
    const T       norm = T(1) / static_cast<T>((2 * rz + 1) * (2 * r + 1) * (2 * r + 1));
    T *           alongX = scratch;               // (K, Z, Y, Ex)
    T *           alongY = scratch + K * Z * Y * Ex; // (K, Z, Ey, Ex)
    for (int64_t row = 0; row < K * Z * Y; ++row)
    {
      for (int64_t e = 0; e < Ex; ++e)
      {
        T sum = 0;
        for (int64_t j = std::max<int64_t>(0, e - X + 1); j <= std::min<int64_t>(2 * r, e); ++j)
        {
          sum += dD[row * X + e - j];
        }
        alongX[row * Ex + e] = sum;
      }
    }
    for (int64_t kz = 0; kz < K * Z; ++kz)
    {
      for (int64_t e = 0; e < Ey; ++e)
      {
        for (int64_t x = 0; x < Ex; ++x)
        {
          T sum = 0;
          for (int64_t j = std::max<int64_t>(0, e - Y + 1); j <= std::min<int64_t>(2 * r, e); ++j)
          {
            sum += alongX[(kz * Y + e - j) * Ex + x];
          }
          alongY[(kz * Ey + e) * Ex + x] = sum;
        }
      }
    }
    const int64_t plane = Ey * Ex;
    for (int64_t k = 0; k < K; ++k)
    {
      for (int64_t e = 0; e < Ez; ++e)
      {
        for (int64_t i = 0; i < plane; ++i)
        {
          T sum = 0;
          for (int64_t j = std::max<int64_t>(0, e - Z + 1); j <= std::min<int64_t>(2 * rz, e); ++j)
          {
            sum += alongY[((k * Z + e - j) * plane) + i];
          }
          dS[(k * Ez + e) * plane + i] = sum * norm;
        }
      }
    }
  }

  // From D (K, P): d = D - min_k D (argmin kept), v = mean_k d, level = mean_x v, V = clamp(v),
  // out = exp(-d / V). Fills d in place of D.
  template <typename T>
  void
  descriptor(T * D, int64_t * argmin, T * v, T * V, T & level, T * out) const
  {
    const auto P = voxels(), K = channels();
    double     total = 0;
    for (int64_t i = 0; i < P; ++i)
    {
      int64_t best = 0;
      for (int64_t k = 1; k < K; ++k)
      {
        best = D[k * P + i] < D[best * P + i] ? k : best;
      }
      const T m = D[best * P + i];
      T       sum = 0;
      for (int64_t k = 0; k < K; ++k)
      {
        D[k * P + i] -= m;
        sum += D[k * P + i];
      }
      argmin[i] = best;
      v[i] = sum / static_cast<T>(K);
      total += v[i];
    }
    level = static_cast<T>(total / static_cast<double>(P));
    const T high = level * T(1000), low = level * T(0.001) + T(1e-12);
    for (int64_t i = 0; i < P; ++i)
    {
      V[i] = std::max(std::min(v[i], high), low);
      for (int64_t k = 0; k < K; ++k)
      {
        out[k * P + i] = std::exp(-D[k * P + i] / V[i]);
      }
    }
  }
};

PatchKernel
patchKernel(const MindSpec & spec, const torch::Tensor & x)
{
  const int   dimension = static_cast<int>(x.dim()) - 2;
  PatchKernel kernel;
  kernel.Z = dimension == 3 ? x.size(2) : 1;
  kernel.Y = x.size(dimension == 3 ? 3 : 2);
  kernel.X = x.size(dimension == 3 ? 4 : 3);
  kernel.rz = dimension == 3 ? spec.radius : 0;
  kernel.r = spec.radius;
  for (const auto & [a, b] : pairs(dimension, spec.dilation, spec.ssc))
  {
    std::array<int64_t, 3> pa{ 0, 0, 0 }, pb{ 0, 0, 0 };
    for (int k = 0; k < dimension; ++k)
    {
      pa[3 - dimension + k] = a[k];
      pb[3 - dimension + k] = b[k];
    }
    kernel.a.push_back(pa);
    kernel.b.push_back(pb);
  }
  return kernel;
}

template <typename T>
struct Scratch
{
  std::vector<T>       diff, square, box, D, v, V, out;
  std::vector<int64_t> argmin;

  explicit Scratch(const PatchKernel & k)
    : diff(k.channels() * k.extended())
    , square(k.channels() * k.extended())
    , box(2 * k.channels() * (k.Z + 2 * k.rz) * (k.Y + 2 * k.r) * k.X)
    , D(k.channels() * k.voxels())
    , v(k.voxels())
    , V(k.voxels())
    , out(k.channels() * k.voxels())
    , argmin(k.voxels())
  {}
};

torch::Tensor
fusedForward(const torch::Tensor & x, const MindSpec & spec)
{
  const auto kernel = patchKernel(spec, x);
  const auto images = x.size(0) * x.size(1);
  auto       shape = x.sizes().vec();
  shape[1] *= kernel.channels();
  auto out = torch::empty(shape, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mind", [&] {
    const auto * in = x.const_data_ptr<scalar_t>();
    auto *       o = out.data_ptr<scalar_t>();
    at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> s(kernel);
      for (int64_t i = begin; i < end; ++i)
      {
        scalar_t level{};
        kernel.differences(in + i * kernel.voxels(), s.diff.data(), s.square.data());
        kernel.boxMean(s.square.data(), s.box.data(), s.D.data());
        kernel.descriptor(s.D.data(), s.argmin.data(), s.v.data(), s.V.data(), level,
                          o + i * kernel.channels() * kernel.voxels());
      }
    });
  });
  return out;
}

// dL/dx from dL/d(out), recomputing the forward quantities of each image.
torch::Tensor
fusedBackward(const torch::Tensor & x, const torch::Tensor & gradOut, const MindSpec & spec)
{
  const auto kernel = patchKernel(spec, x);
  const auto images = x.size(0) * x.size(1);
  auto       gradIn = torch::zeros_like(x);
  const auto go = gradOut.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mind_backward", [&] {
    const auto * in = x.const_data_ptr<scalar_t>();
    const auto * g = go.const_data_ptr<scalar_t>();
    auto *       gi = gradIn.data_ptr<scalar_t>();
    at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t>     s(kernel);
      const auto            P = kernel.voxels(), K = kernel.channels();
      const int64_t         Ez = kernel.Z + 2 * kernel.rz, Ey = kernel.Y + 2 * kernel.r, Ex = kernel.X + 2 * kernel.r;
      std::vector<scalar_t> dd(K * P), dS(K * kernel.extended());
      s.box.resize(2 * K * kernel.extended());
      for (int64_t i = begin; i < end; ++i)
      {
        scalar_t level{};
        kernel.differences(in + i * P, s.diff.data(), s.square.data());
        kernel.boxMean(s.square.data(), s.box.data(), s.D.data());
        kernel.descriptor(s.D.data(), s.argmin.data(), s.v.data(), s.V.data(), level, s.out.data());
        const scalar_t * G = g + i * K * P;
        const scalar_t   high = level * scalar_t(1000), low = level * scalar_t(0.001) + scalar_t(1e-12);
        double           gLevel = 0;
        for (int64_t p = 0; p < P; ++p)
        {
          scalar_t gV = 0;
          for (int64_t k = 0; k < K; ++k)
          {
            const auto e = s.out[k * P + p] * G[k * P + p];
            dd[k * P + p] = -e / s.V[p];
            gV += e * s.D[k * P + p];
          }
          gV /= s.V[p] * s.V[p];
          // V = max(min(v, high), low); ties split the gradient, as torch.minimum/maximum do.
          const scalar_t m = std::min(s.v[p], high);
          const scalar_t toM = m > low ? gV : (m == low ? gV / 2 : scalar_t(0));
          const scalar_t toLow = gV - toM;
          const scalar_t toV = s.v[p] < high ? toM : (s.v[p] == high ? toM / 2 : scalar_t(0));
          const scalar_t toHigh = toM - toV;
          gLevel += static_cast<double>(toHigh) * 1000.0 + static_cast<double>(toLow) * 0.001;
          for (int64_t k = 0; k < K; ++k)
          {
            dd[k * P + p] += toV / static_cast<scalar_t>(K);
          }
        }
        // level = mean over voxels and channels of d.
        const auto perEntry = static_cast<scalar_t>(gLevel / static_cast<double>(K * P));
        for (int64_t p = 0; p < P; ++p)
        {
          scalar_t sum = 0;
          for (int64_t k = 0; k < K; ++k)
          {
            dd[k * P + p] += perEntry;
            sum += dd[k * P + p];
          }
          dd[s.argmin[p] * P + p] -= sum; // d = D - min_k D: dD = dd, minus all of it at the argmin
        }
        kernel.boxMeanTranspose(dd.data(), s.box.data(), dS.data());
        // S = diff^2, diff = I(y + a) - I(y + b): scatter 2 diff dS to the two clamped voxels.
        scalar_t * gImage = gi + i * P;
        auto       clamp = [](int64_t j, int64_t n) { return j < 0 ? 0 : (j >= n ? n - 1 : j); };
        for (int64_t k = 0; k < K; ++k)
        {
          const auto & a = kernel.a[k];
          const auto & b = kernel.b[k];
          for (int64_t z = 0; z < Ez; ++z)
          {
            const auto za = clamp(z - kernel.rz + a[0], kernel.Z) * kernel.Y;
            const auto zb = clamp(z - kernel.rz + b[0], kernel.Z) * kernel.Y;
            for (int64_t y = 0; y < Ey; ++y)
            {
              const auto ya = (za + clamp(y - kernel.r + a[1], kernel.Y)) * kernel.X;
              const auto yb = (zb + clamp(y - kernel.r + b[1], kernel.Y)) * kernel.X;
              const auto base = ((k * Ez + z) * Ey + y) * Ex;
              for (int64_t x0 = 0; x0 < Ex; ++x0)
              {
                const auto t = 2 * s.diff[base + x0] * dS[base + x0];
                gImage[ya + clamp(x0 - kernel.r + a[2], kernel.X)] += t;
                gImage[yb + clamp(x0 - kernel.r + b[2], kernel.X)] -= t;
              }
            }
          }
        }
      }
    });
  });
  return gradIn;
}

struct FusedMind : public torch::autograd::Function<FusedMind>
{
  static torch::Tensor
  forward(torch::autograd::AutogradContext * ctx, const torch::Tensor & x, int64_t radius, int64_t dilation, bool ssc)
  {
    ctx->save_for_backward({ x });
    ctx->saved_data["radius"] = radius;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["ssc"] = ssc;
    return fusedForward(x, MindSpec{ static_cast<int>(radius), static_cast<int>(dilation), ssc });
  }

  static torch::autograd::tensor_list
  backward(torch::autograd::AutogradContext * ctx, torch::autograd::tensor_list grads)
  {
    const auto       x = ctx->get_saved_variables()[0];
    const MindSpec   spec{ static_cast<int>(ctx->saved_data["radius"].toInt()),
                         static_cast<int>(ctx->saved_data["dilation"].toInt()),
                         ctx->saved_data["ssc"].toBool() };
    return { fusedBackward(x, grads[0], spec), torch::Tensor(), torch::Tensor(), torch::Tensor() };
  }
};
} // namespace

std::optional<MindSpec>
builtinMind(const std::string & name)
{
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char ch) { return std::toupper(ch); });
  MindSpec    spec;
  std::string variant;
  if (upper.rfind("MIND-SSC/", 0) == 0)
  {
    spec.ssc = true;
    variant = upper.substr(9);
  }
  else if (upper.rfind("MIND/", 0) == 0)
  {
    variant = upper.substr(5);
  }
  else
  {
    return std::nullopt;
  }
  const auto d = variant.find('D');
  if (variant.empty() || variant[0] != 'R' || d == std::string::npos || !positiveInteger(variant.substr(1, d - 1)) ||
      !positiveInteger(variant.substr(d + 1)))
  {
    throw std::runtime_error("built-in model \"" + name +
                             "\": expected MIND/R<radius>D<dilation> or MIND-SSC/R<radius>D<dilation> with positive "
                             "integers, e.g. MIND/R1D2 or MIND-SSC/R2D2 (and no file exists at that path)");
  }
  spec.radius = std::stoi(variant.substr(1, d - 1));
  spec.dilation = std::stoi(variant.substr(d + 1));
  return spec;
}

int64_t
mindChannels(const MindSpec & spec, int dimension)
{
  return static_cast<int64_t>(pairs(dimension, spec.dilation, spec.ssc).size());
}

std::vector<torch::Tensor>
mind(const torch::Tensor & x, const MindSpec & spec)
{
  const int dimension = static_cast<int>(x.dim()) - 2;
  TORCH_CHECK(dimension == 2 || dimension == 3,
              "built-in MIND expects (N, C, *spatial) with 2 or 3 spatial axes, got shape ",
              x.sizes());
  // Small patches (Jacobian mode): the fused kernel; whole images: vectorised tensor operations.
  if (x.device().is_cpu() && x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1)) <= (dimension == 3 ? 32768 : 4096))
  {
    return { FusedMind::apply(x.contiguous(), spec.radius, spec.dilation, spec.ssc) };
  }
  const auto           n = x.size(0);
  const auto           c = x.size(1);
  const auto           spatial = x.sizes().slice(2).vec();
  const int64_t        r = spec.radius;
  const int64_t        pad = spec.radius + spec.dilation;
  std::vector<int64_t> shape{ n * c, 1 };
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  namespace F = torch::nn::functional;
  const auto padded = F::pad(x.reshape(shape),
                             F::PadFuncOptions(std::vector<int64_t>(2 * dimension, pad)).mode(torch::kReplicate));

  // box(S_u) per distinct difference vector u (first non-zero component positive), with where it starts.
  struct Field
  {
    torch::Tensor boxed;
    Offset        low; // padded-image index of the field's first voxel
  };
  std::map<Offset, Field>    fields;
  std::vector<torch::Tensor> distances;
  for (const auto & [a, b] : pairs(dimension, spec.dilation, spec.ssc))
  {
    Offset v(dimension);
    for (int k = 0; k < dimension; ++k)
    {
      v[k] = b[k] - a[k];
    }
    const auto firstNonZero = *std::find_if(v.begin(), v.end(), [](int64_t e) { return e != 0; });
    const bool flip = firstNonZero < 0; // D(x; a, b) = D(x; b, a): anchor the pair at b instead
    Offset     u = v;
    if (flip)
    {
      std::transform(v.begin(), v.end(), u.begin(), [](int64_t e) { return -e; });
    }
    const auto & anchor = flip ? b : a;
    auto &       field = fields[u];
    if (!field.boxed.defined())
    {
      // S_u(y) = (I(y) - I(y + u))^2 wherever y and y + u are inside the padded image.
      auto first = padded;
      auto second = padded;
      field.low.resize(dimension);
      for (int k = 0; k < dimension; ++k)
      {
        field.low[k] = std::max<int64_t>(0, -u[k]);
        const auto length = padded.size(2 + k) - std::abs(u[k]);
        first = first.narrow(2 + k, field.low[k], length);
        second = second.narrow(2 + k, field.low[k] + u[k], length);
      }
      field.boxed = boxMean((first - second).square(), dimension, 2 * r + 1);
    }
    // D(x; a, b) = box(S_u)(x + anchor), box centred: padded index x + pad - r + anchor.
    auto distance = field.boxed;
    for (int k = 0; k < dimension; ++k)
    {
      distance = distance.narrow(2 + k, pad - r + anchor[k] - field.low[k], spatial[k]);
    }
    distances.push_back(distance);
  }
  auto d = torch::cat(distances, 1);
  d = d - std::get<0>(d.min(1, true));
  auto                 variance = d.mean(1, true);
  std::vector<int64_t> levelShape(dimension + 2, 1);
  levelShape[0] = -1;
  // Per image of the batch, so that a patch's descriptor never depends on the other patches.
  const auto level = variance.flatten(1).mean(1).reshape(levelShape);
  variance = torch::maximum(torch::minimum(variance, level * 1000.0), level * 0.001 + 1e-12);
  auto                 out = torch::exp(-d / variance);
  std::vector<int64_t> outShape{ n, c * out.size(1) };
  outShape.insert(outShape.end(), spatial.begin(), spatial.end());
  return { out.reshape(outShape) };
}

} // namespace impact
