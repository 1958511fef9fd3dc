// impact-elastix: the elastix component "Impact" (implementation).
#pragma once

#include "elxImpactMetric.h"

#include "itkImageFileWriter.h"
#include "itkMetaImageIO.h"
#include "itkImpactImageTensor.h"
#include "itkTimeProbe.h"
#include <itkDeref.h>

#include <ATen/Parallel.h>

#include <filesystem>

namespace elastix
{

template <typename TElastix>
void
ImpactMetric<TElastix>::BeforeRegistration()
{
  m_Models = std::make_shared<impact::ModelCache>();
  m_StaticMaps = std::make_shared<impact::StaticCache>();
  this->SetModelCache(m_Models);
  // elastix -threads N bounds torch's intra-op pool too (otherwise torch takes every core).
  const Configuration & configuration = itk::Deref(ElastixMetric::GetConfiguration());
  const std::string     threads = configuration.GetCommandLineArgument("-threads");
  if (!threads.empty())
  {
    try
    {
      at::set_num_threads(std::max(1, std::stoi(threads)));
    }
    catch (const std::exception &)
    {
      this->ThrowError(std::invalid_argument("-threads \"" + threads + "\" is not a thread count"));
    }
  }
  log::info("IMPACT: torch runs with " + std::to_string(at::get_num_threads()) + " thread(s)");
}

template <typename TElastix>
void
ImpactMetric<TElastix>::BeforeEachResolution()
{
  const Configuration & configuration = itk::Deref(ElastixMetric::GetConfiguration());
  const unsigned int    level = this->m_Registration->GetAsITKBaseType()->GetCurrentLevel();

  // As every elastix metric: "<label><name>" first (Metric0ModelsPath, ... when a map combines
  // several metrics, e.g. (Metric "Impact" "Impact")), then the plain name.
  const std::string             label = BaseComponent::GetComponentLabel();
  const impact::ParameterLookup lookup =
    [&configuration, &label](const std::string & name) -> std::optional<std::vector<std::string>> {
    for (const auto & spelled : { label + name, name })
    {
      if (configuration.HasParameter(spelled))
      {
        return *configuration.template RetrieveValuesOfParameter<std::string>(spelled);
      }
    }
    return std::nullopt;
  };
  this->SetErrorContext(label, level);
  try
  {
    this->SetLevelConfig(impact::parseLevel(lookup, level));
  }
  catch (const impact::ParameterError & e)
  {
    this->ThrowError(e);
  }

  impact::Engine::Options options;
  options.seed = impact::defaultRandomSeed;
  configuration.ReadParameter(options.seed, "RandomSeed", 0, false);
  options.seed += level; // a fresh but reproducible stream per level
  options.info = [](const std::string & message) { log::info(message); };
  options.warn = [](const std::string & message) { log::warn(message); };
  options.staticCache = m_StaticMaps;
  this->SetEngineOptions(options);
  m_IterationsThisLevel = 0;
}

template <typename TElastix>
void
ImpactMetric<TElastix>::AfterEachIteration()
{
  const auto & config = this->GetLevelConfig();
  ++m_IterationsThisLevel;
  if (config.mode == impact::Mode::Static && config.featuresMapUpdateInterval > 0 &&
      m_IterationsThisLevel % config.featuresMapUpdateInterval == 0)
  {
    this->UpdateMovingFeatures(this->m_Registration->GetAsITKBaseType()->GetOptimizer()->GetCurrentPosition());
  }
}

template <typename TElastix>
void
ImpactMetric<TElastix>::AfterEachResolution()
{
  const auto * engine = this->GetEngine();
  if (!engine)
  {
    return;
  }
  // One line, stable wording: benchmarks/ reads it to relate model work to the machine's FLOP rate.
  const auto & s = engine->statistics();
  log::info(std::ostringstream{} << "IMPACT statistics: " << s.evaluations << " evaluations ("
                                 << s.evaluationsWithGradient << " with gradient), " << s.samples << " samples, "
                                 << s.patchesForward << " patches forward, " << s.patchesBackward
                                 << " patches backward, " << s.seconds << " s in the metric");
}

template <typename TElastix>
void
ImpactMetric<TElastix>::Initialize()
{
  itk::TimeProbe timer;
  timer.Start();
  this->ITKMetric::Initialize();
  timer.Stop();
  log::info(std::ostringstream{} << "Initialization of Impact metric took: "
                                 << static_cast<std::int64_t>(timer.GetMean() * 1000) << " ms.");
  const unsigned int level = this->m_Registration->GetAsITKBaseType()->GetCurrentLevel();
  this->WriteFeatureMaps(level);
}

template <typename TElastix>
void
ImpactMetric<TElastix>::WriteFeatureMaps(unsigned int level) const
{
  const auto * engine = this->GetEngine();
  const auto & directory = engine ? this->GetLevelConfig().featureMapDirectory : std::string{};
  if (directory.empty() || engine->featureMaps().empty())
  {
    return;
  }
  std::error_code error;
  std::filesystem::create_directories(directory, error); // mode 0777 less the user's umask
  if (error)
  {
    this->ThrowError(std::runtime_error("cannot create WriteFeatureMaps directory \"" + directory + "\": " + error.message()));
  }
  auto write = [&directory](const impact::Geometry & geometry, const torch::Tensor & values, const std::string & name) {
    auto writer = itk::ImageFileWriter<itk::VectorImage<float, ITKMetric::Dimension>>::New();
    writer->SetImageIO(itk::MetaImageIO::New());
    writer->SetInput(impact::tensorToVectorImage<ITKMetric::Dimension>(geometry, values));
    writer->SetFileName((std::filesystem::path(directory) / name).string());
    writer->Update();
  };
  const auto & cfg = this->GetLevelConfig();
  for (size_t i = 0; i < engine->modelInputs().size(); ++i)
  {
    for (const auto & [side, spec, input] :
         { std::tuple{ "Fixed", &cfg.fixedModels[i], &engine->modelInputs()[i].first },
           std::tuple{ "Moving", &cfg.movingModels[i], &engine->modelInputs()[i].second } })
    {
      std::string name = std::string(side) + "_" + std::to_string(level);
      for (auto v : spec->voxelSize)
      {
        std::ostringstream os;
        os << v;
        name += "_" + os.str();
      }
      write(input->geometry, input->values, name + ".mha");
    }
  }
  for (size_t l = 0; l < engine->featureMaps().size(); ++l)
  {
    const auto & layer = cfg.layers[l];
    for (const auto & [side, spec, map] :
         { std::tuple{ "Fixed", &cfg.fixedModels[layer.model], &engine->featureMaps()[l].first },
           std::tuple{ "Moving", &cfg.movingModels[layer.model], &engine->featureMaps()[l].second } })
    {
      const auto stem = std::filesystem::path(spec->path).stem().string();
      const bool single = std::count(spec->layersMask.begin(), spec->layersMask.end(), '1') == 1;
      const auto name = std::string(side) + "_" + std::to_string(level) + "_" + stem +
                        (single ? "" : "_layer" + std::to_string(layer.output)) + ".mha";
      write(map->geometry, map->features, name);
    }
  }
  log::info("IMPACT: feature maps of resolution " + std::to_string(level) + " written to " + directory);
}

} // end namespace elastix
