#include "Config.h"

#include "Mind.h"

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <sstream>

namespace impact
{
namespace
{

std::vector<std::string>
splitOn(const std::string & s, const std::string & separators)
{
  std::vector<std::string> out;
  std::string              cur;
  for (char c : s)
  {
    if (separators.find(c) != std::string::npos)
    {
      if (!cur.empty())
      {
        out.push_back(cur);
      }
      cur.clear();
    }
    else
    {
      cur += c;
    }
  }
  if (!cur.empty())
  {
    out.push_back(cur);
  }
  return out;
}

std::string
join(const std::vector<std::string> & v, const std::string & sep = " ")
{
  std::string out;
  for (const auto & s : v)
  {
    out += (out.empty() ? "" : sep) + s;
  }
  return out;
}

/** The tokens of one logical parameter at one level, and how the map spelled it. */
struct Raw
{
  std::string              spelled;
  std::vector<std::string> tokens;
  bool                     readmeSpelling{};

  [[noreturn]] void
  fail(const std::string & what) const
  {
    throw ParameterError("(" + spelled + " \"" + join(tokens) + "\"): " + what);
  }
};

class Reader
{
public:
  Reader(const ParameterLookup & lookup, unsigned level)
    : m_Lookup(lookup)
    , m_Level(level)
  {}

  /** A per-model or per-layer parameter: the IMPACT README's `Name` (entry = level) or `ImpactName<level>`. */
  std::optional<Raw>
  list(const std::string & name) const
  {
    const auto readme = m_Lookup(name);
    auto       elx = m_Lookup("Impact" + name + std::to_string(m_Level));
    std::string elxName = "Impact" + name + std::to_string(m_Level);
    if (!elx && m_Level > 0)
    {
      elx = m_Lookup("Impact" + name + "0");
      elxName = "Impact" + name + "0";
    }
    if (readme && elx)
    {
      throw ParameterError("both " + name + " and " + elxName + " are set; use one spelling");
    }
    if (readme)
    {
      if (readme->empty())
      {
        throw ParameterError("(" + name + ") has no value");
      }
      const auto & entry = m_Level < readme->size() ? (*readme)[m_Level] : (*readme)[0];
      return Raw{ name, splitOn(entry, " \t"), true };
    }
    if (elx)
    {
      if (elx->empty())
      {
        throw ParameterError("(" + elxName + ") has no value");
      }
      return Raw{ elxName, *elx, false };
    }
    return std::nullopt;
  }

  /** A parameter with one value per level: the IMPACT README's `Name` or elastix 5.3.1's `ImpactName`. */
  std::optional<Raw>
  perLevel(const std::string & name) const
  {
    for (const auto & spelled : { name, "Impact" + name })
    {
      if (auto v = m_Lookup(spelled))
      {
        if (v->empty())
        {
          throw ParameterError("(" + spelled + ") has no value");
        }
        return Raw{ spelled, { m_Level < v->size() ? (*v)[m_Level] : (*v)[0] }, spelled == name };
      }
    }
    return std::nullopt;
  }

private:
  const ParameterLookup & m_Lookup;
  unsigned                m_Level;
};

long long
toInt(const Raw & raw, const std::string & token, long long lo, long long hi, const std::string & allowed)
{
  try
  {
    size_t    used = 0;
    long long v = std::stoll(token, &used);
    if (used == token.size() && v >= lo && v <= hi)
    {
      return v;
    }
  }
  catch (const std::exception &)
  {
  }
  raw.fail("\"" + token + "\" is not " + allowed);
}

double
toPositiveDouble(const Raw & raw, const std::string & token)
{
  try
  {
    size_t used = 0;
    double v = std::stod(token, &used);
    if (used == token.size() && std::isfinite(v) && v > 0)
    {
      return v;
    }
  }
  catch (const std::exception &)
  {
  }
  raw.fail("\"" + token + "\" is not a positive number");
}

bool
toBool(const Raw & raw)
{
  const auto & v = raw.tokens.at(0);
  if (v == "true" || v == "1")
  {
    return true;
  }
  if (v == "false" || v == "0")
  {
    return false;
  }
  raw.fail("expected \"true\" or \"false\"");
}

/** Per-model vectors of numbers: the IMPACT README writes "5*5*5 7*7*7", elastix 5.3.1 "5 5 5 7 7 7". */
template <typename T, typename Convert>
std::vector<std::vector<T>>
perModelVectors(const Raw & raw, const std::vector<ModelSpec> & models, Convert convert)
{
  std::vector<std::vector<T>> out;
  if (raw.readmeSpelling)
  {
    if (raw.tokens.size() != models.size())
    {
      raw.fail("expected " + std::to_string(models.size()) + " value(s) (one per model, like \"5*5*5\"), got " +
               std::to_string(raw.tokens.size()));
    }
    for (size_t i = 0; i < models.size(); ++i)
    {
      const auto parts = splitOn(raw.tokens[i], "*x");
      if (static_cast<int>(parts.size()) != models[i].dimension)
      {
        raw.fail("model " + std::to_string(i + 1) + " has Dimension " + std::to_string(models[i].dimension) +
                 ", so \"" + raw.tokens[i] + "\" needs " + std::to_string(models[i].dimension) + " values");
      }
      std::vector<T> v;
      for (const auto & p : parts)
      {
        v.push_back(convert(p));
      }
      out.push_back(v);
    }
    return out;
  }
  size_t need = 0;
  for (const auto & m : models)
  {
    need += m.dimension;
  }
  if (raw.tokens.size() != need)
  {
    raw.fail("expected " + std::to_string(need) + " values (the models' dimensions added up), got " +
             std::to_string(raw.tokens.size()));
  }
  size_t k = 0;
  for (const auto & m : models)
  {
    std::vector<T> v;
    for (int a = 0; a < m.dimension; ++a)
    {
      v.push_back(convert(raw.tokens[k++]));
    }
    out.push_back(v);
  }
  return out;
}

/** The models of one side as read so far, with what error messages need to say about them. */
struct ModelSet
{
  std::vector<ModelSpec> models;
  std::string            pathsSpelled; // how the map spelled ModelsPath
  std::string            pathHint;     // how a ModelsPath with spaces was read; empty when it was not

  /** Assigns one token per model; `assign(raw, token, model)`. */
  template <typename Assign>
  void
  perModel(const Raw & raw, Assign assign)
  {
    if (raw.tokens.size() != models.size())
    {
      raw.fail("expected " + std::to_string(models.size()) + " value(s), one per model in " + pathsSpelled + pathHint);
    }
    for (size_t i = 0; i < models.size(); ++i)
    {
      assign(raw, raw.tokens[i], models[i]);
    }
  }
};

// The IMPACT README's spelling separates models by spaces, so a path with spaces arrives in pieces:
// pieces are joined while they name no model until they do. When some piece still names no model,
// the hint says how such a path is written, for the errors that follow.
void
readModelPaths(const Raw & raw, ModelSet & set, const std::string & prefix)
{
  auto files = raw.tokens;
  if (raw.readmeSpelling && files.size() > 1)
  {
    auto isModel = [](const std::string & path) {
      try
      {
        return std::filesystem::is_regular_file(path) || builtinMind(path).has_value();
      }
      catch (const std::runtime_error &)
      {
        return false;
      }
    };
    std::vector<std::string> joined;
    for (size_t i = 0; i < files.size();)
    {
      size_t j = i;
      auto   candidate = files[i];
      while (!isModel(candidate) && j + 1 < files.size())
      {
        candidate += " " + files[++j];
      }
      if (!isModel(candidate))
      {
        joined.clear();
        break;
      }
      joined.push_back(candidate);
      i = j + 1;
    }
    if (!joined.empty())
    {
      files = joined;
    }
    else
    {
      set.pathHint = " (" + raw.spelled + " \"" + join(files) + "\" was read as " + std::to_string(files.size()) +
                     " models separated by spaces, not all of them existing files; a model path that contains " +
                     "spaces is written in elastix 5.3.1's spelling, one quoted value per model: (Impact" + prefix +
                     "ModelsPath0 \"" + join(files) + "\"))";
    }
  }
  set.pathsSpelled = raw.spelled;
  set.models.resize(files.size());
  for (size_t i = 0; i < files.size(); ++i)
  {
    set.models[i].path = files[i];
    set.models[i].pathHint = set.pathHint;
  }
}

void
readDimension(const Raw & raw, ModelSet & set)
{
  set.perModel(raw, [](const Raw & r, const std::string & t, ModelSpec & m) {
    m.dimension = static_cast<int>(toInt(r, t, 2, 3, "2 or 3"));
  });
}

void
readChannels(const Raw & raw, ModelSet & set)
{
  set.perModel(raw, [](const Raw & r, const std::string & t, ModelSpec & m) {
    m.channels = static_cast<int>(toInt(r, t, 1, 4096, "a positive channel count"));
  });
}

void
readLayersMask(const Raw & raw, ModelSet & set)
{
  set.perModel(raw, [](const Raw & r, const std::string & t, ModelSpec & m) {
    if (t.find_first_not_of("01") != std::string::npos || t.find('1') == std::string::npos)
    {
      r.fail("\"" + t + "\" must be a string of 0/1 with at least one 1, one character per model output");
    }
    m.layersMask = t;
  });
}

void
readPatchSize(const Raw & raw, ModelSet & set)
{
  const auto v = perModelVectors<int64_t>(raw, set.models, [&](const std::string & t) {
    return toInt(raw, t, 0, 4096, "a patch size in voxels (0 = whole axis)");
  });
  for (size_t i = 0; i < v.size(); ++i)
  {
    set.models[i].patchSize = v[i];
  }
}

void
readVoxelSize(const Raw & raw, ModelSet & set)
{
  const auto v = perModelVectors<double>(raw, set.models, [&](const std::string & t) { return toPositiveDouble(raw, t); });
  for (size_t i = 0; i < v.size(); ++i)
  {
    set.models[i].voxelSize = v[i];
  }
}

/** Parameters of each model of a side, in reading order (Dimension before the vectors it sizes).
 *  Each also exists as Fixed<Name> and Moving<Name>. ModelsPath comes first and is read apart. */
struct ModelParameter
{
  const char * name;
  void (*read)(const Raw &, ModelSet &);
};
const ModelParameter modelParameters[] = {
  { "ModelsPath", nullptr },         { "Dimension", readDimension }, { "NumberOfChannels", readChannels },
  { "LayersMask", readLayersMask },  { "PatchSize", readPatchSize }, { "VoxelSize", readVoxelSize },
};

/** Reads the model set of one side; `prefix` is "", "Fixed" or "Moving" (which falls back to ""). */
std::vector<ModelSpec>
readModels(const Reader & reader, const std::string & prefix)
{
  auto get = [&](const std::string & name) {
    if (auto r = reader.list(prefix + name))
    {
      return r;
    }
    return prefix.empty() ? std::optional<Raw>{} : reader.list(name);
  };
  const auto paths = get("ModelsPath");
  if (!paths)
  {
    throw ParameterError("(" + prefix + "ModelsPath) is required: the TorchScript model file(s) of the IMPACT metric");
  }
  ModelSet set;
  readModelPaths(*paths, set, prefix);
  for (const auto & parameter : modelParameters)
  {
    const auto raw = parameter.read ? get(parameter.name) : std::nullopt;
    if (raw)
    {
      parameter.read(*raw, set);
    }
  }
  for (auto & m : set.models) // defaults of what the map left out
  {
    m.patchSize = m.patchSize.empty() ? std::vector<int64_t>(m.dimension, 5) : m.patchSize;
    m.voxelSize = m.voxelSize.empty() ? std::vector<double>(m.dimension, 1.5) : m.voxelSize;
    m.layersMask = m.layersMask.empty() ? "1" : m.layersMask;
  }
  return set.models;
}

/** Spreads a per-layer parameter: one value per selected layer, per model, or one for all. */
template <typename Assign>
void
perLayer(const Raw & raw, const std::vector<ModelSpec> & models, std::vector<LayerSpec> & layers, Assign assign)
{
  const auto n = raw.tokens.size();
  if (n != layers.size() && n != models.size() && n != 1)
  {
    raw.fail("expected " + std::to_string(layers.size()) + " value(s), one per selected layer (the 1s of " +
             "LayersMask), or one per model, or a single value");
  }
  for (auto & layer : layers)
  {
    const size_t k = n == layers.size() ? static_cast<size_t>(&layer - layers.data())
                     : n == 1           ? 0
                                        : static_cast<size_t>(layer.model);
    assign(raw, raw.tokens[k], layer);
  }
}

void
readSubsetFeatures(const Raw & raw, LevelConfig & cfg)
{
  perLayer(raw, cfg.fixedModels, cfg.layers, [](const Raw & r, const std::string & t, LayerSpec & l) {
    l.subsetFeatures = toInt(r, t, 0, 1 << 30, "a channel count (0 = all channels)");
    l.subsetFeaturesGiven = true;
  });
}

void
readPCA(const Raw & raw, LevelConfig & cfg)
{
  perLayer(raw, cfg.fixedModels, cfg.layers, [](const Raw & r, const std::string & t, LayerSpec & l) {
    l.pca = toInt(r, t, 0, 1 << 20, "a number of principal components (0 = no PCA)");
  });
}

void
readDistance(const Raw & raw, LevelConfig & cfg)
{
  perLayer(raw, cfg.fixedModels, cfg.layers, [](const Raw & r, const std::string & t, LayerSpec & l) {
    try
    {
      l.distance = parseDistance(t);
    }
    catch (const std::invalid_argument & e)
    {
      r.fail(e.what());
    }
  });
}

void
readLayersWeight(const Raw & raw, LevelConfig & cfg)
{
  perLayer(raw, cfg.fixedModels, cfg.layers, [](const Raw & r, const std::string & t, LayerSpec & l) {
    try
    {
      size_t used = 0;
      l.weight = std::stod(t, &used);
      if (used == t.size() && std::isfinite(l.weight))
      {
        return;
      }
    }
    catch (const std::exception &)
    {
    }
    r.fail("\"" + t + "\" is not a number");
  });
}

/** Parameters with one value per level (elastix 5.3.1 spells them Impact<Name>), and parameters of
 *  the selected layers (Impact<Name><level> there). */
struct LevelParameter
{
  const char * name;
  void (*read)(const Raw &, LevelConfig &);
};

void
readMode(const Raw & raw, LevelConfig & cfg)
{
  const auto & v = raw.tokens[0];
  if (v != "Jacobian" && v != "Static")
  {
    raw.fail("unknown mode; allowed: Jacobian, Static");
  }
  cfg.mode = v == "Static" ? Mode::Static : Mode::Jacobian;
}

void
readPlaneSampling(const Raw & raw, LevelConfig & cfg)
{
  const auto & v = raw.tokens[0];
  if (v != "Principal" && v != "Oblique")
  {
    raw.fail("unknown plane sampling; allowed: Principal (one of the image's axis planes per sample), Oblique "
             "(a random orientation per sample)");
  }
  cfg.planeSampling = v == "Principal" ? PlaneSampling::Principal : PlaneSampling::Oblique;
}

void
readFeaturesMapUpdateInterval(const Raw & raw, LevelConfig & cfg)
{
  cfg.featuresMapUpdateInterval =
    static_cast<int>(toInt(raw, raw.tokens[0], -1, 1 << 30, "-1 (once per level) or a positive iteration count"));
  if (cfg.featuresMapUpdateInterval == 0)
  {
    raw.fail("0 is not allowed; use -1 (once per level) or a positive iteration count");
  }
}

void
readFeatureMapDirectory(const Raw & raw, LevelConfig & cfg)
{
  const auto & v = raw.tokens[0];
  if (v == "true" || v == "True" || v == "TRUE")
  {
    raw.fail("expects \"false\" or the directory to write the feature maps to");
  }
  cfg.featureMapDirectory = (v == "false" || v == "False" || v == "FALSE") ? "" : v;
}

const LevelParameter levelParameters[] = {
  { "Mode", readMode },
  { "GPU",
    [](const Raw & r, LevelConfig & c) {
      c.gpu = static_cast<int>(toInt(r, r.tokens[0], -1, 1023, "a CUDA device index, or -1 for the CPU"));
    } },
  { "GPUFallback", [](const Raw & r, LevelConfig & c) { c.gpuFallback = toBool(r); } },
  { "UseMixedPrecision", [](const Raw & r, LevelConfig & c) { c.mixedPrecision = toBool(r); } },
  { "PlaneSampling", readPlaneSampling },
  { "FeaturesMapUpdateInterval", readFeaturesMapUpdateInterval },
  { "MaximumSamplesPerEvaluation",
    [](const Raw & r, LevelConfig & c) {
      c.maximumSamples = toInt(r, r.tokens[0], 0, 1LL << 40, "a number of samples (0 = all)");
    } },
  { "MemoryLimit",
    [](const Raw & r, LevelConfig & c) {
      c.memoryLimitGB = r.tokens[0] == "0" ? 0.0 : toPositiveDouble(r, r.tokens[0]);
    } },
  { "WriteFeatureMaps", readFeatureMapDirectory },
  { "FeatureMapOutputDirectory", readFeatureMapDirectory },
};

const LevelParameter layerParameters[] = {
  { "SubsetFeatures", readSubsetFeatures },
  { "PCA", readPCA },
  { "Distance", readDistance },
  { "LayersWeight", readLayersWeight },
};

} // namespace

LevelConfig
parseLevel(const ParameterLookup & lookup, unsigned level)
{
  const Reader reader(lookup, level);
  LevelConfig  cfg;
  cfg.maximumSamples = -1; // not given: decided by the mode below
  for (const auto & parameter : levelParameters)
  {
    if (const auto raw = reader.perLevel(parameter.name))
    {
      parameter.read(*raw, cfg);
    }
  }
  if (cfg.maximumSamples < 0)
  {
    // Jacobian mode runs every sample's patch through the network; ASGD's step-size estimation asks
    // for NumberOfSamplesForExactGradient (elastix default 100000) samples at once. A few thousand
    // estimate that gradient as well (README), so Jacobian mode uses at most 10000 by default.
    cfg.maximumSamples = cfg.mode == Mode::Jacobian ? 10000 : 0;
  }

  const bool sideSpecific = reader.list("FixedModelsPath") || reader.list("MovingModelsPath");
  if (sideSpecific)
  {
    if (!reader.list("FixedModelsPath") || !reader.list("MovingModelsPath"))
    {
      throw ParameterError("FixedModelsPath and MovingModelsPath must be given together (or use ModelsPath for both)");
    }
    cfg.fixedModels = readModels(reader, "Fixed");
    cfg.movingModels = readModels(reader, "Moving");
  }
  else
  {
    cfg.fixedModels = readModels(reader, "");
    cfg.movingModels = cfg.fixedModels;
  }
  if (cfg.fixedModels.size() != cfg.movingModels.size())
  {
    throw ParameterError("FixedModelsPath has " + std::to_string(cfg.fixedModels.size()) +
                         " model(s) but MovingModelsPath has " + std::to_string(cfg.movingModels.size()) +
                         "; features are compared model by model");
  }
  for (size_t i = 0; i < cfg.fixedModels.size(); ++i)
  {
    const auto & f = cfg.fixedModels[i];
    const auto & m = cfg.movingModels[i];
    if (std::count(f.layersMask.begin(), f.layersMask.end(), '1') !=
        std::count(m.layersMask.begin(), m.layersMask.end(), '1'))
    {
      throw ParameterError("FixedLayersMask \"" + f.layersMask + "\" and MovingLayersMask \"" + m.layersMask +
                           "\" of model " + std::to_string(i + 1) + " select different numbers of layers");
    }
    for (const auto * spec : { &f, &m })
    {
      for (auto p : spec->patchSize)
      {
        if (p == 0 && cfg.mode == Mode::Jacobian)
        {
          throw ParameterError("PatchSize 0 (whole image) of model " + spec->path +
                               " is only allowed in Static mode; Jacobian mode needs a patch size per axis");
        }
      }
    }
    for (int o = 0; o < static_cast<int>(f.layersMask.size()); ++o)
    {
      if (f.layersMask[o] == '1')
      {
        LayerSpec layer;
        layer.model = static_cast<int>(i);
        layer.output = o;
        layer.subsetFeatures = 32;
        cfg.layers.push_back(layer);
      }
    }
  }

  for (const auto & parameter : layerParameters)
  {
    if (const auto raw = reader.list(parameter.name))
    {
      parameter.read(*raw, cfg);
    }
  }
  for (const auto & layer : cfg.layers)
  {
    if (layer.pca > 0 && cfg.mode != Mode::Static)
    {
      throw ParameterError("PCA " + std::to_string(layer.pca) + " needs Mode \"Static\" (features are precomputed " +
                           "there); set PCA to 0 in Jacobian mode");
    }
  }
  return cfg;
}

std::vector<std::string>
knownParameterNames(unsigned levels)
{
  std::vector<std::string> names;
  auto                     addList = [&](const std::string & n) {
    names.push_back(n);
    for (unsigned l = 0; l < levels; ++l)
    {
      names.push_back("Impact" + n + std::to_string(l));
    }
  };
  for (const auto & parameter : modelParameters)
  {
    for (const auto * side : { "", "Fixed", "Moving" })
    {
      addList(side + std::string(parameter.name));
    }
  }
  for (const auto & parameter : layerParameters)
  {
    addList(parameter.name);
  }
  for (const auto & parameter : levelParameters)
  {
    names.push_back(parameter.name);
    names.push_back("Impact" + std::string(parameter.name));
  }
  return names;
}

} // namespace impact
