// impact-elastix: the elastix component "Impact" (implementation).
#pragma once

#include "elxImpactMetric.h"

#include "itkImageFileWriter.h"
#include "itkMetaImageIO.h"
#include "itkTimeProbe.h"
#include "itkVectorImage.h"
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
      itkExceptionMacro("IMPACT: -threads \"" << threads << "\" is not a thread count");
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
  try
  {
    this->SetLevelConfig(impact::parseLevel(lookup, level));
  }
  catch (const impact::ParameterError & e)
  {
    itkExceptionMacro("IMPACT (" << label << ") parameter error at resolution " << level << ": " << e.what());
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
    itkExceptionMacro("IMPACT: cannot create WriteFeatureMaps directory \"" << directory << "\": " << error.message());
  }
  constexpr unsigned int D = ITKMetric::Dimension;
  using VectorImage = itk::VectorImage<float, D>;
  auto write = [&](const impact::Geometry & g, const torch::Tensor & values, const std::string & name) {
    auto                               image = VectorImage::New();
    typename VectorImage::SizeType     size;
    typename VectorImage::SpacingType  spacing;
    typename VectorImage::PointType    origin;
    typename VectorImage::DirectionType direction;
    for (unsigned int a = 0; a < D; ++a)
    {
      size[a] = g.size[a];
      spacing[a] = g.spacing[a];
      origin[a] = g.origin[a];
      for (unsigned int b = 0; b < D; ++b)
      {
        direction[a][b] = g.direction[a * D + b];
      }
    }
    const auto channels = values.dim() > static_cast<int64_t>(D) ? values.size(-1) : 1;
    image->SetRegions(size);
    image->SetSpacing(spacing);
    image->SetOrigin(origin);
    image->SetDirection(direction);
    image->SetNumberOfComponentsPerPixel(channels);
    image->Allocate();
    const auto data = values.to(torch::kFloat32).contiguous();
    std::copy_n(data.data_ptr<float>(), data.numel(), image->GetBufferPointer());
    auto writer = itk::ImageFileWriter<VectorImage>::New();
    writer->SetImageIO(itk::MetaImageIO::New());
    writer->SetInput(image);
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
