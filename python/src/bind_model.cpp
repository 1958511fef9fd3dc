// Model inspection: what a TorchScript feature extractor returns, and how far each output sees.
#include "core/Model.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace
{
py::list
inspectModel(const std::string & path, int dimension, int channels, int numberOfOutputs, int64_t probeSize)
{
  std::vector<impact::OutputDescription> outputs;
  {
    // The field of view is measured with autograd, which must not run under the GIL.
    py::gil_scoped_release release;
    outputs = impact::describeOutputs(path, dimension, channels, numberOfOutputs, probeSize);
  }
  py::list out;
  for (size_t o = 0; o < outputs.size(); ++o)
  {
    py::dict d;
    d["output"] = o;
    d["channels"] = outputs[o].channels;
    d["size"] = outputs[o].size;
    d["stride"] = outputs[o].stride;
    d["field_of_view"] = outputs[o].fieldOfView;
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
        "Runs a TorchScript model on a probe and returns, per output, its channels, size and "
        "stride (x first) and the measured field of view in voxels (the minimal valid PatchSize). "
        "`number_of_outputs` is the LayersMask length the model is told (models taking it as an "
        "argument); a probe_size of 0 picks 97 (2D) or 41 (3D).");
}
