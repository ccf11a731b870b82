"""Checks a configuration once at start, so that a bad value fails with a message naming its field."""

import json
import math
import os
import zipfile
from typing import Any

import ml_collections
import numpy as np
from absl import logging

AUDIO_SOURCES = ('soundfont_notes', 'nsynth')
FACE_SOURCES = ('lfw_subset', 'tfrecords')
FACE_EMBEDDINGS = ('dlib', 'network')
RENDERERS = ('tinysoundfont', 'fluidsynth')
GENERATORS = ('wavegan', 'harmonic')
LOSSES = ('hinge', 'wgan-gp')
UPSAMPLINGS = ('transposed', 'nearest', 'linear')
MININGS = ('batch_hard', 'semi_hard')
MFCC_SCALES = ('coefficient', 'pooled')
AUX_MFCC_SCALES = ('phi', 'coefficient')
NONFINITE = ('stop', 'skip')
METRIC_PAIRS = ('batch', 'one_pitch')
METRIC_FEATURES = ('phi', 'mfcc', 'both')
FACE_NOISE_SPACES = ('embedding', 'projection')
DTYPES = ('float32', 'bfloat16')
# TFDS nsynth's instrument family names, in its ClassLabel order.
NSYNTH_FAMILIES = ('bass', 'brass', 'flute', 'guitar', 'keyboard', 'mallet', 'organ', 'reed', 'string', 'synth_lead',
                   'vocal')

# The embedded default faces: 100 LFW crops and the astronaut, every DEFAULT_FACES_TEST_EVERY-th identity (sorted by
# name) held out for the test split (data/default_faces.py).
DEFAULT_FACE_IDENTITIES = 101
DEFAULT_FACES_TEST_EVERY = 10
# Seeds seed numpy's and JAX's generators, which take non-negative integers (and seed + 1 is used too).
MAX_SEED = 2**31 - 2


class ConfigError(ValueError):
  """A configuration value is out of range, or a config cannot be found; the message names the field or file."""


# Fields added after work directories were first written, with the values that reproduce the behaviour of the
# versions that lacked them: a `config.json` written before a field existed loads as the model was trained.
ADDED_FIELDS = {
    'model.generator': 'wavegan',
    'model.wavegan.upsample': 'transposed',
    'model.wavegan.pitch_input': False,
    'model.wavegan.post_filter': 0,
    'train.pitch_classification_weight': 0.0,
    'train.metric_warmup_steps': 0,
    'eval.listening_pitches': (36, 48, 60, 72),
    'eval.listening_faces': 40,
    'model.harmonic.noise_max': 2.0,
    'model.harmonic.relative_noise': False,
    'train.dtype': 'float32',
    'audio.release_s': 0.0,
    'model.harmonic.normalize_face': False,
    'model.harmonic.fundamental_floor': 0.0,
    'model.harmonic.fundamental_floor_high': 0.0,
    'model.harmonic.fundamental_floor_pitches': (60, 72),
    'data.exported': '',
    'train.metric_pairs': 'batch',
    'model.aux_pack': 1,
    'audio.note_rms': 0.0,
    'train.face_spread': 1.0,
    'train.face_noise': 0.0,
    'model.harmonic.face_components': 0,
    'model.aux_pitch_conditional': False,
    'model.harmonic.steady_harmonics': False,
    'train.face_noise_space': 'embedding',
    'train.aux_r1_weight': 0.0,
    'train.metric_shift': 0.0,
    'model.harmonic.learned_phases': False,
    'audio_embedding.mfcc_scale': 'coefficient',
    'train.aux_mfcc_scale': 'phi',
    'train.g_ema_decay': 0.0,
    'train.family_marginal_weight': 0.0,
    'train.family_faces_spread': 0.0,
    'train.family_faces_judged': False,
    'train.family_faces_center': '',
    'train.family_batch_weight': 0.0,
    'train.family_faces_shift': 0.0,
    'model.harmonic.face_norm': 'batch',
    'model.harmonic.max_partial_hz': 0.0,
    'train.metric_features': 'phi',
    'model.discriminator_harmonics': 0,
    'train.share_matching_weight': 0.0,
    'train.share_matching_band': 12,
    'model.harmonic.envelope_bands': 0,
}

# Fields that moved, old name -> new name: a `config.json` (or a run's identity) written before the move loads with
# the new names.
RENAMED_FIELDS = {
    'model.generator_dim': 'model.wavegan.dim',
    'model.upsample': 'model.wavegan.upsample',
    'model.pitch_input': 'model.wavegan.pitch_input',
    'model.post_filter': 'model.wavegan.post_filter',
}

# The sections every config has: a config.json without them was not written by training.
_CONFIG_SECTIONS = ('audio', 'data', 'model', 'train', 'eval')


def load_config(workdir: str, config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """`config` if given, else the resolved config that training wrote to `<workdir>/config.json`.

  Fields of RENAMED_FIELDS are read under their new names; fields of ADDED_FIELDS missing from an older config.json
  get the values its model was trained with.
  """
  if config is not None:
    return config
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'No --config given and no {path}: pass the config the model was trained with.')
  try:
    with open(path, 'rb') as f:
      loaded = tuples(json.loads(f.read()))
  except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, unreadable.
    raise ConfigError(f'{path} is not valid JSON ({e}): pass the config the model was trained with.') from e
  return from_dict(loaded, path)


def from_dict(loaded: Any, path: str) -> ml_collections.ConfigDict:
  """The config of a config.json's content written by training (`path` names it in messages), with the fields of
  RENAMED_FIELDS under their new names and those of ADDED_FIELDS it lacks set to the values of older versions.

  Raises:
    ConfigError: it is not a config written by training.
  """
  missing = [k for k in _CONFIG_SECTIONS if not isinstance(loaded, dict) or not isinstance(loaded.get(k), dict)]
  if missing:
    raise ConfigError(f'{path} is not a config written by training (it lacks {", ".join(missing)}): pass the config '
                      'the model was trained with.')
  for old, new in RENAMED_FIELDS.items():
    parent, _, name = old.rpartition('.')
    section = get_field(loaded, parent) if parent else loaded
    if isinstance(section, dict) and name in section:
      logging.info('%s has %s (written by an older version): read as %s.', path, old, new)
      set_field(loaded, new, section.pop(name), create=True)
  for field, value in ADDED_FIELDS.items():
    try:
      get_field(loaded, field)
    except ConfigError:
      logging.info('%s has no %s (written by an older version): using %r.', path, field, value)
      set_field(loaded, field, value, create=True)
  return ml_collections.ConfigDict(loaded)


def tuples(value: Any) -> Any:
  """JSON lists back to the tuples the config files use (membership tests such as notes.exclude need tuples)."""
  if isinstance(value, dict):
    return {k: tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(tuples(v) for v in value)
  return value


def cache_root() -> str:
  """Where data, checkpoints, renders and compiled code go: $FACE2MUSIC_CACHE or ~/.cache/face2music_jax.

  An empty $FACE2MUSIC_CACHE (`FACE2MUSIC_CACHE=$DIR` with DIR unset) means the default, not the current directory.
  """
  return os.environ.get('FACE2MUSIC_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'face2music_jax')


def num_pitches(config: ml_collections.ConfigDict) -> int:
  """Number of pitch classes: MIDI pitches pitch_min..pitch_max inclusive."""
  return config.audio.pitch_max - config.audio.pitch_min + 1


# `pitch` means two things: in the note batches (data/note_batches.py) and as G's and D's input it is a pitch class,
# an index into the model's pitch range (MIDI pitch - config.audio.pitch_min); everywhere else (translation, the
# listening measures, melodies, names like `midi`) it is a MIDI pitch. These two are the one conversion between them.


def pitch_class(config: ml_collections.ConfigDict, midi):
  """MIDI pitch -> pitch class: midi - config.audio.pitch_min, for an int or an array (numpy, JAX, TensorFlow),
  whose dtype is kept. No range check: a MIDI pitch outside pitch_min..pitch_max gives a class outside
  0..num_pitches(config) - 1."""
  return midi - int(config.audio.pitch_min)


def midi_pitch(config: ml_collections.ConfigDict, pitch):
  """Pitch class -> MIDI pitch: pitch + config.audio.pitch_min, for an int or an array (numpy, JAX, TensorFlow),
  whose dtype is kept; the inverse of `pitch_class`."""
  return pitch + int(config.audio.pitch_min)


def family_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The instrument families that the notes' `family` indexes: those rendered, or all 11 of NSynth for real nsynth."""
  if config.data.audio_source == 'soundfont_notes':
    return tuple(f for f in NSYNTH_FAMILIES if f in config.notes.programs)
  return NSYNTH_FAMILIES


def num_families(config: ml_collections.ConfigDict) -> int:
  return len(family_names(config))


def listening_pitches(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The MIDI pitches of config.eval.listening_pitches within audio.pitch_min..pitch_max."""
  a = config.audio
  return tuple(int(p) for p in config.eval.listening_pitches if a.pitch_min <= p <= a.pitch_max)


def tfds_data_dir(config: ml_collections.ConfigDict) -> str:
  return config.data.tfds_data_dir or os.path.join(config.data_dir, 'tfds')


def _check(ok: bool, field: str, value, expected: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} = {value!r} is invalid: {expected}.')


def get_field(config: Any, field: str) -> Any:
  """The value of a dotted field ('train.g_lr') of a ConfigDict or nested dict.

  Raises:
    ConfigError: naming the field, if the config has no such field.
  """
  node = config
  for part in field.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      raise ConfigError(f'The config has no field {field}.')
    node = node[part]
  return node


def set_field(config: Any, field: str, value: Any, create: bool = False) -> None:
  """Sets a dotted field ('train.g_lr') of a ConfigDict or nested dict to `value`.

  Args:
    config: the config.
    field: the dotted name.
    value: the new value.
    create: create the field (and its missing sections, as dicts) if it is absent, as for the fields that older
      config files lack; otherwise an absent field is an error.

  Raises:
    ConfigError: naming the field, if it is absent (and not `create`).
  """
  *parents, leaf = field.split('.')
  node = config
  for part in parents:
    if create and part not in node:
      node[part] = {}
    if not hasattr(node, 'keys') or part not in node or not hasattr(node[part], 'keys'):
      raise ConfigError(f'The config has no field {field}.')
    node = node[part]
  if leaf not in node and not create:
    raise ConfigError(f'The config has no field {field}.')
  node[leaf] = value


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def _positive(config, field: str) -> None:
  value = get_field(config, field)
  _check(_finite(value) and value > 0, field, value, 'expected a positive finite number')


def _choice(config, field: str, choices: tuple[str, ...]) -> None:
  value = get_field(config, field)
  _check(value in choices, field, value, f'expected one of {choices}')


# The variable of a face network weights file (faces/network.py) whose last axis is the embedding width.
_FACE_NETWORK_OUTPUT = 'params/last_linear/kernel'


def face_network_dim(path: str) -> int:
  """The embedding width of a face network weights file (faces/network.py), read from its last layer alone; the
  whole file is checked when the network is loaded (faces/embedding.py: make_embedder).

  Raises:
    ConfigError: naming config.data.face_weights and the file, if it is missing, not an .npz or lacks the layer.
  """
  where = f'config.data.face_weights = {path!r}'
  if not os.path.isfile(path):
    raise ConfigError(f'{where}: no such file (expected the .npz weights of the face network; format in '
                      'face2music_jax/faces/network.py).')
  try:
    with np.load(path, allow_pickle=False) as weights:
      kernel = weights[_FACE_NETWORK_OUTPUT]
  except (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError, zipfile.BadZipFile) as e:
    raise ConfigError(f'{where}: not a readable face network weights file (an .npz holding '
                      f'{_FACE_NETWORK_OUTPUT}): {type(e).__name__}: {e}') from e
  if kernel.ndim != 2:
    raise ConfigError(f'{where}: {_FACE_NETWORK_OUTPUT} has shape {kernel.shape}, expected [features, width].')
  return int(kernel.shape[-1])


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first invalid field; returns the config unchanged otherwise."""
  for field in ('audio.sample_rate', 'audio.length', 'data.face_image_size', 'data.embedding_dim', 'data.face_views',
                'data.shuffle_buffer', 'model.wavegan.dim', 'model.discriminator_dim', 'model.kernel_size',
                'model.stride', 'model.num_layers', 'model.audio_embedding_dim', 'model.audio_embedding_channels',
                'model.classifier_channels', 'mfcc.n_mfcc', 'mfcc.n_fft', 'mfcc.hop_length', 'mfcc.n_mels',
                'train.batch_size', 'train.num_steps', 'train.d_steps', 'train.g_lr', 'train.d_lr', 'train.aux_lr',
                'train.adam_eps', 'train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints',
                'train.sample_every', 'train.num_sample_faces', 'audio_embedding.num_steps',
                'audio_embedding.batch_size', 'audio_embedding.lr', 'audio_embedding.margin', 'classifiers.num_steps',
                'classifiers.batch_size', 'classifiers.lr', 'stats.num_pairs', 'stats.max_examples',
                'eval.num_translations', 'eval.batch_size', 'eval.listening_faces'):
    _positive(config, field)
  _choice(config, 'data.audio_source', AUDIO_SOURCES)
  _choice(config, 'data.face_source', FACE_SOURCES)
  _choice(config, 'data.face_embedding', FACE_EMBEDDINGS)
  _choice(config, 'notes.renderer', RENDERERS)
  _choice(config, 'model.generator', GENERATORS)
  _choice(config, 'model.wavegan.upsample', UPSAMPLINGS)
  _choice(config, 'train.loss', LOSSES)
  _choice(config, 'audio_embedding.mining', MININGS)
  _choice(config, 'audio_embedding.mfcc_scale', MFCC_SCALES)
  _choice(config, 'train.aux_mfcc_scale', AUX_MFCC_SCALES)
  _check(
      config.train.aux_mfcc_scale == 'phi' or config.train.use_aux_discriminator, 'train.aux_mfcc_scale',
      config.train.aux_mfcc_scale, "the auxiliary discriminator's input, which this config does not use "
      "(train.use_aux_discriminator = False): leave it 'phi'")
  _choice(config, 'train.nonfinite', NONFINITE)
  _choice(config, 'train.metric_pairs', METRIC_PAIRS)
  _choice(config, 'train.metric_features', METRIC_FEATURES)
  _choice(config, 'train.face_noise_space', FACE_NOISE_SPACES)
  _check(
      isinstance(config.model.discriminator_harmonics, int) and config.model.discriminator_harmonics >= 0,
      'model.discriminator_harmonics', config.model.discriminator_harmonics,
      'expected a number of harmonic bands >= 0 (0 = no harmonic branch)')
  _check(
      _finite(config.train.face_spread) and config.train.face_spread >= 1, 'train.face_spread',
      config.train.face_spread, 'expected a factor >= 1 (1 = none)')
  _check(
      _finite(config.train.face_noise) and config.train.face_noise >= 0, 'train.face_noise', config.train.face_noise,
      'expected a non-negative scale (0 = none)')
  _check(
      _finite(config.train.aux_r1_weight) and config.train.aux_r1_weight >= 0, 'train.aux_r1_weight',
      config.train.aux_r1_weight, 'expected a non-negative weight (0 = none)')
  _check(
      _finite(config.train.family_marginal_weight) and config.train.family_marginal_weight >= 0,
      'train.family_marginal_weight', config.train.family_marginal_weight, 'expected a non-negative weight (0 = none)')
  _check(
      _finite(config.train.family_faces_spread) and config.train.family_faces_spread >= 0, 'train.family_faces_spread',
      config.train.family_faces_spread, "expected a non-negative factor (0 = the family-marginal loss on G's batch)")
  _check(config.train.family_faces_spread == 0 or config.train.family_marginal_weight > 0, 'train.family_faces_spread',
         config.train.family_faces_spread, 'a factor > 0 needs train.family_marginal_weight > 0 (the loss it feeds)')
  _check(isinstance(config.train.family_faces_judged, bool), 'train.family_faces_judged',
         config.train.family_faces_judged, 'expected True or False')
  _check(not config.train.family_faces_judged or config.train.family_faces_spread > 0, 'train.family_faces_judged',
         config.train.family_faces_judged, 'True needs train.family_faces_spread > 0 (the faces D would judge)')
  _check(isinstance(config.train.family_faces_center, str), 'train.family_faces_center',
         config.train.family_faces_center, "expected a faces file's path ('' = the batch's mean)")
  _check(not config.train.family_faces_center or config.train.family_faces_spread > 0, 'train.family_faces_center',
         config.train.family_faces_center, 'a faces file needs train.family_faces_spread > 0 (the faces it places)')
  _check(
      _finite(config.train.family_batch_weight) and config.train.family_batch_weight >= 0, 'train.family_batch_weight',
      config.train.family_batch_weight, 'expected a non-negative weight (0 = none)')
  _check(config.train.family_batch_weight == 0 or config.train.family_faces_spread > 0, 'train.family_batch_weight',
         config.train.family_batch_weight,
         'a weight > 0 needs train.family_faces_spread > 0 (without it train.family_marginal_weight is the batch\'s)')
  _check(config.model.harmonic.face_norm in ('batch', 'fixed'), 'model.harmonic.face_norm',
         config.model.harmonic.face_norm, "expected 'batch' or 'fixed'")
  _check(config.model.harmonic.face_norm == 'batch' or config.model.harmonic.normalize_face, 'model.harmonic.face_norm',
         config.model.harmonic.face_norm, "'fixed' needs model.harmonic.normalize_face (the standardisation it fixes)")
  _check(
      _finite(config.train.family_faces_shift) and config.train.family_faces_shift >= 0, 'train.family_faces_shift',
      config.train.family_faces_shift, 'expected a non-negative factor (0 = none)')
  _check(config.train.family_faces_shift == 0 or config.train.family_faces_spread > 0, 'train.family_faces_shift',
         config.train.family_faces_shift, 'a factor > 0 needs train.family_faces_spread > 0 (the faces it moves)')
  _check(
      _finite(config.train.share_matching_weight) and config.train.share_matching_weight >= 0,
      'train.share_matching_weight', config.train.share_matching_weight, 'expected a non-negative weight (0 = none)')
  _check(
      isinstance(config.train.share_matching_band, int) and config.train.share_matching_band >= 0,
      'train.share_matching_band', config.train.share_matching_band,
      'expected a band width in semitones >= 0 (0 = the whole batch)')
  _check(_finite(config.train.metric_shift), 'train.metric_shift', config.train.metric_shift,
         "expected a finite number of standard deviations (0 = the paper's Eq. 1)")
  _check(
      config.train.face_noise_space != 'projection' or
      (config.model.generator == 'harmonic' and isinstance(config.model.harmonic.face_components, int) and
       config.model.harmonic.face_components > 0), 'train.face_noise_space', config.train.face_noise_space,
      "'projection' needs model.generator = 'harmonic' with model.harmonic.face_components > 0")
  _check(
      isinstance(config.model.aux_pack, int) and config.model.aux_pack >= 1 and
      config.train.batch_size % config.model.aux_pack == 0, 'model.aux_pack', config.model.aux_pack,
      f'expected a positive integer that divides train.batch_size ({config.train.batch_size})')
  # G translates the faces twice in one batch of 2B: only the harmonic generator's batch norm (over the faces,
  # whose statistics [z; z] keeps) is unchanged by that; the WaveGAN's, over its activations, is not.
  _check(config.train.metric_pairs != 'one_pitch' or config.model.generator == 'harmonic', 'train.metric_pairs',
         config.train.metric_pairs, "'one_pitch' needs model.generator = 'harmonic'")
  # WGAN-GP's penalty interpolates and measures A's gradient note by note, not pack by pack.
  _check(config.model.aux_pack == 1 or config.train.loss != 'wgan-gp', 'model.aux_pack', config.model.aux_pack,
         "packs need train.loss = 'hinge' (the gradient penalty is per note)")
  _choice(config, 'train.dtype', DTYPES)

  for field, seed in (('seed', config.seed), ('eval.seed', config.eval.seed)):
    _check(isinstance(seed, int) and 0 <= seed <= MAX_SEED, field, seed, f'expected an integer in 0..{MAX_SEED}')
  a = config.audio
  _check(0 <= a.pitch_min <= a.pitch_max <= 127, 'audio.pitch_min/pitch_max', (a.pitch_min, a.pitch_max),
         'expected 0 <= pitch_min <= pitch_max <= 127')
  _check(a.length <= 4 * a.sample_rate, 'audio.length', a.length, 'NSynth notes hold 4 s of audio')
  _check(
      _finite(a.release_s) and 0 <= a.release_s * a.sample_rate <= a.length, 'audio.release_s', a.release_s,
      'expected seconds >= 0, within the note')
  _check(
      _finite(a.note_rms) and 0 <= a.note_rms <= 0.1, 'audio.note_rms', a.note_rms,
      'expected an RMS in [0, 0.1] (0 = as recorded; louder notes could clip)')
  m = config.model
  upsampling = m.stride**m.num_layers
  _check(a.length % upsampling == 0, 'audio.length', a.length,
         f'the generator and discriminator need a multiple of model.stride**model.num_layers = {upsampling}')
  if m.generator == 'harmonic':
    h = m.harmonic
    for field in ('hidden', 'channels', 'num_harmonics', 'noise_bands', 'frames', 'noise_max'):
      _positive(config, f'model.harmonic.{field}')
    _check(h.num_blocks >= 0, 'model.harmonic.num_blocks', h.num_blocks, 'expected >= 0')
    _check(0 <= h.fundamental_floor < 1, 'model.harmonic.fundamental_floor', h.fundamental_floor,
           'expected a fraction in [0, 1)')
    _check(
        _finite(h.fundamental_floor_high) and
        (h.fundamental_floor_high == 0 or h.fundamental_floor <= h.fundamental_floor_high < 1),
        'model.harmonic.fundamental_floor_high', h.fundamental_floor_high,
        f'expected 0 (none) or a fraction in [model.harmonic.fundamental_floor = {h.fundamental_floor}, 1)')
    top_f0 = 440.0 * 2.0**((config.audio.pitch_max - 69) / 12)
    _check(
        _finite(h.max_partial_hz) and (h.max_partial_hz == 0 or h.max_partial_hz > top_f0),
        'model.harmonic.max_partial_hz', h.max_partial_hz,
        f'expected 0 (up to Nyquist) or a frequency above the highest note\'s fundamental ({top_f0:.0f} Hz at '
        f'audio.pitch_max = {config.audio.pitch_max})')
    _check(
        isinstance(h.envelope_bands, int) and (h.envelope_bands == 0 or h.envelope_bands >= 2),
        'model.harmonic.envelope_bands', h.envelope_bands,
        'expected 0 (a weight per harmonic) or a number of bands >= 2')
    pitches = h.fundamental_floor_pitches
    _check(
        isinstance(pitches, (tuple, list)) and len(pitches) == 2 and all(isinstance(p, int) for p in pitches) and
        pitches[0] < pitches[1], 'model.harmonic.fundamental_floor_pitches', pitches,
        'expected two MIDI pitches (from, to), from < to')
    _check(
        isinstance(h.face_components, int) and 0 <= h.face_components <= config.data.embedding_dim,
        'model.harmonic.face_components', h.face_components,
        f'expected a number of components in [0, data.embedding_dim = {config.data.embedding_dim}] (0 = none)')
    _check(a.length % h.frames == 0, 'model.harmonic.frames', h.frames,
           f'audio.length = {a.length} must be a multiple of the number of frames')
  _check(m.kernel_size % 2 == 1, 'model.kernel_size', m.kernel_size, 'expected an odd kernel size')
  _check(config.data.max_default_faces >= 0, 'data.max_default_faces', config.data.max_default_faces, 'expected >= 0')
  if config.data.face_source == 'lfw_subset':
    limit, every = config.data.max_default_faces, DEFAULT_FACES_TEST_EVERY
    _check(
        limit == 0 or every <= limit <= DEFAULT_FACE_IDENTITIES, 'data.max_default_faces', limit,
        f'expected 0 (all {DEFAULT_FACE_IDENTITIES} default identities) or {every}..{DEFAULT_FACE_IDENTITIES}: '
        f'there are {DEFAULT_FACE_IDENTITIES}, and every {every}th is held out for the test split')
  _check(m.phase_shuffle >= 0, 'model.phase_shuffle', m.phase_shuffle, 'expected >= 0')
  _check(m.wavegan.post_filter >= 0, 'model.wavegan.post_filter', m.wavegan.post_filter, 'expected >= 0 taps')
  _check(
      len(m.aux_features) > 0 and m.aux_features[-1] == 1 and all(f > 0 for f in m.aux_features), 'model.aux_features',
      m.aux_features, 'expected positive widths ending in 1')
  _check(config.mfcc.n_fft <= a.length, 'mfcc.n_fft', config.mfcc.n_fft, 'expected n_fft <= audio.length')
  _check(0 <= config.mfcc.fmin < config.mfcc.fmax <= a.sample_rate / 2, 'mfcc.fmin/fmax',
         (config.mfcc.fmin, config.mfcc.fmax), 'expected 0 <= fmin < fmax <= sample_rate / 2')
  _check(config.mfcc.n_mfcc <= config.mfcc.n_mels, 'mfcc.n_mfcc', config.mfcc.n_mfcc, 'expected <= mfcc.n_mels')
  _check(config.train.batch_size >= 2, 'train.batch_size', config.train.batch_size,
         'the metric preservation loss needs at least 2 examples per batch')
  for field in ('metric_weight', 'aux_weight', 'gp_weight', 'pitch_classification_weight', 'metric_warmup_steps'):
    _check(
        _finite(config.train[field]) and config.train[field] >= 0, f'train.{field}', config.train[field],
        'expected a finite number >= 0')
  _check(0 <= config.train.g_ema_decay < 1, 'train.g_ema_decay', config.train.g_ema_decay,
         'expected in [0, 1) (0 = no average of G)')
  _check(0 <= config.train.adam_b1 < 1 and 0 <= config.train.adam_b2 < 1, 'train.adam_b1/adam_b2',
         (config.train.adam_b1, config.train.adam_b2), 'expected in [0, 1)')
  _check(bool(listening_pitches(config)), 'eval.listening_pitches', config.eval.listening_pitches,
         f'expected at least one MIDI pitch within audio.pitch_min..pitch_max = {a.pitch_min}..{a.pitch_max}')
  n = config.notes
  _check(0 <= n.pitch_min <= n.pitch_max <= 127, 'notes.pitch_min/pitch_max', (n.pitch_min, n.pitch_max),
         'expected 0 <= pitch_min <= pitch_max <= 127')
  _check(n.pitch_step > 0, 'notes.pitch_step', n.pitch_step, 'expected a positive number')
  _check(
      len(n.velocities) > 0 and all(0 < v <= 127 for v in n.velocities), 'notes.velocities', n.velocities,
      'expected MIDI velocities in 1..127')
  _check(
      len(n.programs) > 0 and all(len(p) > 0 and all(1 <= x <= 128 for x in p) for p in n.programs.values()),
      'notes.programs', dict(n.programs), 'expected, per family, 1-based General MIDI programs in 1..128')
  unknown = sorted(set(n.programs) - set(NSYNTH_FAMILIES))
  _check(not unknown, 'notes.programs', unknown, f'expected NSynth family names {NSYNTH_FAMILIES}')
  if config.data.face_source == 'tfrecords':
    _check(bool(config.data.face_tfrecords), 'data.face_tfrecords', config.data.face_tfrecords,
           "expected a glob of TFRecord files when data.face_source == 'tfrecords'")
  if config.data.face_embedding == 'network':
    _check(bool(config.data.face_weights), 'data.face_weights', config.data.face_weights,
           "expected a .npz weights file for face_embedding='network'")
    dim = face_network_dim(config.data.face_weights)
    _check(config.data.embedding_dim == dim, 'data.embedding_dim', config.data.embedding_dim,
           f'the face network of data.face_weights = {config.data.face_weights!r} gives {dim}-d embeddings')
  if config.data.face_embedding == 'dlib':
    _check(config.data.embedding_dim == 128, 'data.embedding_dim', config.data.embedding_dim,
           "dlib's face embedding is 128-d")
  return config
