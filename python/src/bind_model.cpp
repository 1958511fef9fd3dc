// Model inspection: what a TorchScript feature extractor returns, and how far each output sees.
#include "core/Model.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace
{
/** Per output: channels, stride and measured field of view (x first), for a probe input of `probe`
 *  voxels per axis. Raises ValueError (ParameterError) when the model does not run on that input. */
struct OutputInfo
{
  int64_t              channels{};
  std::vector<int64_t> size, stride, fieldOfView; // x first
};

std::vector<OutputInfo>
measure(const std::string & path, int dimension, int channels, int numberOfOutputs, int64_t probe)
{
  if (dimension != 2 && dimension != 3)
  {
    throw impact::ParameterError("dimension " + std::to_string(dimension) + " is not supported; use 2 or 3");
  }
  if (channels < 1 || numberOfOutputs < 1 || probe < 0)
  {
    throw impact::ParameterError("channels and number_of_outputs must be positive, probe_size >= 0");
  }
  if (probe == 0)
  {
    probe = dimension == 2 ? 97 : 41;
  }
  const impact::Model model(path, torch::kCPU);
  // How many outputs: models of elastix 5.3.1's contract return as many as they are told.
  std::vector<int64_t> shape{ 1, channels };
  shape.insert(shape.end(), dimension, probe);
  impact::ModelContext context;
  context.numberOfLayers = numberOfOutputs;
  context.stats = torch::tensor({ 0.0f, 1.0f, 0.5f, 0.25f });
  context.direction = torch::eye(dimension, torch::kInt16);
  size_t count = 0;
  {
    torch::InferenceMode guard;
    count = model.forward(torch::zeros(shape), context).size();
  }
  impact::ModelSpec spec;
  spec.path = path;
  spec.dimension = dimension;
  spec.channels = channels;
  spec.patchSize.assign(dimension, probe);
  spec.voxelSize.assign(dimension, 1.0);
  spec.layersMask.assign(count, '1');
  const auto shapes = impact::probeModel(model, spec, {}).outputShapes;

  std::vector<OutputInfo> out(shapes.size());
  for (size_t o = 0; o < shapes.size(); ++o)
  {
    const auto & shape = shapes[o]; // (1, C, *spatial), spatial z first
    auto &       info = out[o];
    info.channels = shape[1];
    info.size.resize(dimension);
    info.stride.resize(dimension);
    for (int a = 0; a < dimension; ++a)
    {
      info.size[a] = shape[1 + dimension - a]; // x first
      info.stride[a] = info.size[a] > 0 ? (probe + info.size[a] - 1) / info.size[a] : 0;
    }
    info.fieldOfView = impact::measureFieldOfView(model, spec, static_cast<int>(o));
  }
  return out;
}

py::list
inspectModel(const std::string & path, int dimension, int channels, int numberOfOutputs, int64_t probe)
{
  std::vector<OutputInfo> infos;
  {
    // The field of view is measured with autograd, which must not run under the GIL.
    py::gil_scoped_release release;
    infos = measure(path, dimension, channels, numberOfOutputs, probe);
  }
  py::list out;
  for (size_t o = 0; o < infos.size(); ++o)
  {
    py::dict d;
    d["output"] = o;
    d["channels"] = infos[o].channels;
    d["size"] = infos[o].size;
    d["stride"] = infos[o].stride;
    d["field_of_view"] = infos[o].fieldOfView;
    out.append(d);
  }
  return out;
}
} // namespace

void
bind_model(py::module_ & m)
{
  m.def("inspect_model", &inspectModel, py::arg("path"), py::arg("dimension"), py::arg("channels") = 1,
        py::arg("number_of_outputs") = 1, py::arg("probe_size") = 0,
        "Runs a TorchScript model on a random probe and returns, per output, its channels, size and "
        "stride (x first) and the measured field of view in voxels (the minimal valid PatchSize). "
        "`number_of_outputs` is the LayersMask length the model is told (models taking it as an "
        "argument); a probe_size of 0 picks 97 (2D) or 41 (3D).");
}
