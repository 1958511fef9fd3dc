// The numerical kernels: cubic B-spline prefilter and sampling, feature distances.
#include "core/BSpline.h"
#include "core/Distances.h"
#include "core/Mind.h"
#include "core/PatchSampler.h"
#include "geometry.h"

#include <torch/extension.h>

namespace py = pybind11;

void
bind_kernels(py::module_ & m)
{
  m.def("bspline_coefficients", &impact::bsplineCoefficients, py::arg("image"),
        "Cubic B-spline coefficients of image (*spatial, C) float32, channels last, mirror boundaries.");
  m.def(
    "bspline_sample",
    [](const torch::Tensor & coefficients, const torch::Tensor & index, bool with_gradient) {
      auto [values, gradient] = impact::bsplineSample(coefficients, index, with_gradient);
      return py::make_tuple(values, with_gradient ? py::cast(gradient) : py::none());
    },
    py::arg("coefficients"),
    py::arg("index"),
    py::arg("with_gradient") = false,
    "Values (M, C) and gradients (M, C, D) w.r.t. the continuous index (M, D), x first.");
  m.def("bspline_resample", &impact::bsplineResample, py::arg("coefficients"), py::arg("positions"),
        "Values (*out, C) on the grid of continuous indices positions[a][i_a] (x first), separably.");
  m.def(
    "sample_patches",
    [](const torch::Tensor & coefficients,
       const py::dict &      geometry,
       const torch::Tensor & centres,
       const std::vector<int64_t> & patchSize,
       const std::vector<double> &  voxelSize,
       const torch::Tensor &        axes,
       bool                         with_gradient) {
      const auto g = geometryFrom(geometry);
      const auto layout = impact::patchLayout(patchSize, voxelSize, axes, g);
      auto       out = impact::samplePatches(coefficients, g, centres, layout, with_gradient);
      return py::make_tuple(out.values, with_gradient ? py::cast(out.indexGradient) : py::none(),
                            !layout.axisOffsets.empty());
    },
    py::arg("coefficients"),
    py::arg("geometry"),
    py::arg("centres"),
    py::arg("patch_size"),
    py::arg("voxel_size"),
    py::arg("axes"),
    py::arg("with_gradient") = false,
    "Patches (N, P) of coefficients (*spatial, 1) around world centres (N, D), P voxels of voxel_size mm along "
    "world axes (d, D) or (N, d, D), x fastest; index gradients (N, P, D); whether the separable kernel ran.");
  m.def(
    "chain_patch_gradient",
    [](const torch::Tensor & patchGradient, const torch::Tensor & indexGradient, const py::dict & geometry) {
      return impact::chainPatchGradient(patchGradient, indexGradient, geometryFrom(geometry));
    },
    py::arg("patch_gradient"),
    py::arg("index_gradient"),
    py::arg("geometry"),
    "dS/dy (N, D) float64 from dS/d(patch) (N, P) and index gradients (N, P, D).");
  m.def(
    "distance",
    [](const std::string & name, const torch::Tensor & f, const torch::Tensor & m) {
      return impact::distance(impact::parseDistance(name), f, m);
    },
    py::arg("name"),
    py::arg("fixed"),
    py::arg("moving"),
    "Mean IMPACT distance between features (N, C, *spatial); differentiable.");
  m.def("distance_names", &impact::distanceNames);
  m.def(
    "mind",
    [](const torch::Tensor & x, const std::string & name) {
      const auto spec = impact::builtinMind(name);
      if (!spec)
      {
        throw py::value_error("\"" + name + "\" is not a built-in model name (MIND/R<r>D<d> or MIND-SSC/R<r>D<d>)");
      }
      return impact::mind(x, *spec).at(0);
    },
    py::arg("x"),
    py::arg("name"),
    "The built-in MIND / MIND-SSC descriptor (name \"MIND/R1D2\", \"MIND-SSC/R2D2\", ...) of x (N, C, *spatial), "
    "2 or 3 spatial axes: (N, C*K, *spatial); differentiable.");
}
