// The per-level engine: S and dS/dy for sample points, as the elastix component computes them.
#include "core/Engine.h"
#include "geometry.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace
{
struct PyEngine
{
  std::shared_ptr<impact::ModelCache> cache = std::make_shared<impact::ModelCache>();
  std::unique_ptr<impact::Engine>     engine;
};
} // namespace

void
bind_engine(py::module_ & m)
{
  py::class_<PyEngine>(m, "Engine", "IMPACT similarity of one resolution level (Jacobian or Static mode).")
    .def(py::init([](const std::map<std::string, std::vector<std::string>> & parameters,
                     unsigned                                                level,
                     const torch::Tensor &                                   fixed,
                     const py::dict &                                        fixedGeometry,
                     const torch::Tensor &                                   moving,
                     const py::dict &                                        movingGeometry,
                     uint64_t                                                seed,
                     int64_t                                                 maxBatchElements) {
           auto lookup = [&parameters](const std::string & name) -> std::optional<std::vector<std::string>> {
             const auto it = parameters.find(name);
             return it == parameters.end() ? std::nullopt : std::optional(it->second);
           };
           auto                    self = std::make_unique<PyEngine>();
           impact::Engine::Options options;
           options.seed = seed;
           options.maxBatchElements = maxBatchElements;
           const auto config = impact::parseLevel(lookup, level);
           const auto fg = geometryFrom(fixedGeometry);
           const auto mg = geometryFrom(movingGeometry);
           py::gil_scoped_release noGil; // autograd runs in the model checks
           self->engine = std::make_unique<impact::Engine>(
             config, *self->cache, impact::makeSideImage(fixed, fg), impact::makeSideImage(moving, mg), options);
           return self;
         }),
         py::arg("parameters"),
         py::arg("level"),
         py::arg("fixed"),
         py::arg("fixed_geometry"),
         py::arg("moving"),
         py::arg("moving_geometry"),
         py::arg("seed") = impact::defaultRandomSeed,
         py::arg("max_batch_elements") = impact::Engine::Options{}.maxBatchElements,
         "parameters: {name: [entries]} as in an elastix map; images: (*spatial) tensors (z, y, x); "
         "geometries: dicts with size, origin, spacing (x first) and a row-major direction.")
    .def(
      "evaluate",
      [](PyEngine & self, const torch::Tensor & fixedPoints, const torch::Tensor & movingPoints, bool withGradient) {
        impact::Engine::Result result;
        {
          py::gil_scoped_release noGil;
          result = self.engine->evaluate(fixedPoints, movingPoints, withGradient);
        }
        return py::make_tuple(result.value, withGradient ? py::cast(result.gradient) : py::none());
      },
      py::arg("fixed_points"),
      py::arg("moving_points"),
      py::arg("with_gradient") = true,
      "S and dS/dy (N, D) for world points x (N, D) and y = T(x) (N, D).");
}
