// impact_elastix._core: the IMPACT engine (no ITK, no elastix) for Python, one bind_* file per concept.
#include <torch/extension.h>

void bind_config(pybind11::module_ & m);
void bind_engine(pybind11::module_ & m);
void bind_kernels(pybind11::module_ & m);
void bind_model(pybind11::module_ & m);

PYBIND11_MODULE(_core, m)
{
  m.doc() = "IMPACT engine bindings: parameter parsing, B-spline kernels, distances, the per-level engine, model inspection";
  bind_config(m);
  bind_kernels(m);
  bind_engine(m);
  bind_model(m);
}
