// Python dict {size, origin, spacing, direction} -> impact::Geometry, shared by the bindings.
#pragma once

#include "core/ImageTensor.h"

#include <torch/extension.h>

inline impact::Geometry
geometryFrom(const pybind11::dict & g)
{
  impact::Geometry out;
  out.size = g["size"].cast<std::vector<int64_t>>();
  out.origin = g["origin"].cast<std::vector<double>>();
  out.spacing = g["spacing"].cast<std::vector<double>>();
  out.direction = g["direction"].cast<std::vector<double>>();
  const auto d = out.size.size();
  if (out.origin.size() != d || out.spacing.size() != d || out.direction.size() != d * d)
  {
    throw pybind11::value_error("geometry needs size, origin, spacing (D values each) and direction (D*D values)");
  }
  return out;
}
