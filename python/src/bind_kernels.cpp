// The numerical kernels: cubic B-spline prefilter and sampling, feature distances.
#include "core/BSpline.h"
#include "core/Distances.h"

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
}
