// Parameter parsing exactly as the elastix component does it, from a dict of parameter entries.
#include "core/Config.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace
{
impact::ParameterLookup
lookupFrom(const std::map<std::string, std::vector<std::string>> & parameters)
{
  return [parameters](const std::string & name) -> std::optional<std::vector<std::string>> {
    const auto it = parameters.find(name);
    if (it == parameters.end())
    {
      return std::nullopt;
    }
    return it->second;
  };
}

py::dict
toDict(const impact::LevelConfig & c)
{
  auto models = [](const std::vector<impact::ModelSpec> & specs) {
    py::list out;
    for (const auto & s : specs)
    {
      py::dict d;
      d["path"] = s.path;
      d["dimension"] = s.dimension;
      d["channels"] = s.channels;
      d["patch_size"] = s.patchSize;
      d["voxel_size"] = s.voxelSize;
      d["layers_mask"] = s.layersMask;
      out.append(d);
    }
    return out;
  };
  py::list layers;
  for (const auto & l : c.layers)
  {
    py::dict d;
    d["model"] = l.model;
    d["output"] = l.output;
    d["subset_features"] = l.subsetFeatures;
    d["pca"] = l.pca;
    d["distance"] = impact::toString(l.distance);
    d["weight"] = l.weight;
    layers.append(d);
  }
  py::dict d;
  d["mode"] = c.mode == impact::Mode::Jacobian ? "Jacobian" : "Static";
  d["gpu"] = c.gpu;
  d["gpu_fallback"] = c.gpuFallback;
  d["mixed_precision"] = c.mixedPrecision;
  d["plane_sampling"] = c.planeSampling == impact::PlaneSampling::Principal ? "Principal" : "Oblique";
  d["features_map_update_interval"] = c.featuresMapUpdateInterval;
  d["feature_map_directory"] = c.featureMapDirectory;
  d["maximum_samples"] = c.maximumSamples;
  d["memory_limit_gb"] = c.memoryLimitGB;
  d["fixed_models"] = models(c.fixedModels);
  d["moving_models"] = models(c.movingModels);
  d["layers"] = layers;
  return d;
}
} // namespace

void
bind_config(py::module_ & m)
{
  py::register_exception<impact::ParameterError>(m, "ParameterError", PyExc_ValueError);
  m.def(
    "parse_level",
    [](const std::map<std::string, std::vector<std::string>> & parameters, unsigned level) {
      return toDict(impact::parseLevel(lookupFrom(parameters), level));
    },
    py::arg("parameters"),
    py::arg("level"),
    "IMPACT settings of one resolution level from {name: [entries]}, as the elastix component reads "
    "them. Raises ParameterError (a ValueError) naming the parameter, the value and what is allowed.");
  m.def("known_parameter_names", &impact::knownParameterNames, py::arg("levels"),
        "Every IMPACT parameter name, in both spellings, for `levels` resolution levels.");
}
