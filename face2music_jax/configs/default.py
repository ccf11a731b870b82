"""Shared defaults for face2music_jax.

`configs/baseline.py`, `configs/metric.py` and `configs/aux.py` import this file and flip the loss switches. The
string after the colon selects a size: `--config=configs/aux.py:tiny` (tests), `:small` (default, trains on
2 CPU cores in minutes, with the harmonic-plus-noise generator) or `:paper` (the paper's model sizes and its
WaveGAN generator, for a GPU or a TPU pod). Any field can be overridden
on the command line, e.g. `--config.train.batch_size=32`.
"""

import os

import ml_collections

from face2music_jax import config_lib

SIZES = ('tiny', 'small', 'paper')

# NSynth instrument families whose notes the SoundFont builder renders (synth_lead has no General MIDI
# counterpart that plays the claimed pitch), each with 1-based General MIDI program numbers measured to play the
# claimed pitch with TimGM6mb.sf2 and FluidR3_GM.sf2 (each checked by pYIN when the notes were chosen).
GM_PROGRAMS = {
    'bass': (33, 34),
    'brass': (57, 61),
    'flute': (74,),
    'guitar': (25, 27),
    'keyboard': (1, 5),
    'mallet': (12, 13),
    'organ': (21,),
    'reed': (66, 72),
    'string': (41, 49),
    'vocal': (53, 54),
}


def cache_root() -> str:
  """Where data, checkpoints and renders go: $FACE2MUSIC_CACHE or ~/.cache/face2music_jax."""
  return config_lib.cache_root()


def parse_size(arg: str | None) -> str:
  """Accepts `None`, `'tiny'` or `'size=tiny'` (big_vision style)."""
  if not arg:
    return 'small'
  size = arg.split('=', 1)[1] if arg.startswith('size=') else arg
  if size not in SIZES:
    raise ValueError(f'Unknown config size {size!r}; expected one of {SIZES}.')
  return size


def get_config(arg: str | None = None, name: str = 'aux') -> ml_collections.ConfigDict:
  """Returns the full configuration; `arg` selects the size variant."""
  size = parse_size(arg)
  c = ml_collections.ConfigDict()
  c.name = name
  c.size = size
  c.seed = 0
  c.workdir = os.path.join(cache_root(), 'work', f'{name}_{size}')
  c.data_dir = os.path.join(cache_root(), 'data')

  # Audio, as NSynth: 16 kHz mono; the models see `length` samples from the note onset.
  c.audio = ml_collections.ConfigDict()
  c.audio.sample_rate = 16000
  c.audio.length = 8192
  c.audio.pitch_min = 24  # MIDI pitch range kept for training (inclusive), as GANSynth's NSynth subset.
  c.audio.pitch_max = 84
  # Every note, generated or real, ends with a fade over its last release_s seconds (audio/synthesis.py:
  # release_window): notes cut from longer ones would otherwise end with a click.
  c.audio.release_s = 0.05
  # Every note, generated or real, scaled to this RMS (audio/synthesis.py: normalize_rms; 0.07 is -23 dBFS, the
  # real notes' median, whose loudest peaks then stay below 0.7): notes differ in timbre, not level. 0 = as recorded.
  c.audio.note_rms = 0.0

  # Input data.
  c.data = ml_collections.ConfigDict()
  c.data.audio_source = 'soundfont_notes'  # 'soundfont_notes' (embedded default) or 'nsynth' (real TFDS NSynth).
  c.data.nsynth_name = 'nsynth/gansynth_subset'  # TFDS name used when audio_source == 'nsynth'.
  c.data.tfds_data_dir = ''  # '' = config.data_dir/tfds.
  c.data.shuffle_buffer = 2048
  c.data.face_source = 'lfw_subset'  # 'lfw_subset' (embedded default) or 'tfrecords' (e.g. converted VGGFace2).
  c.data.face_tfrecords = ''  # Glob of face TFRecord files when face_source == 'tfrecords'.
  c.data.face_image_size = 64  # Faces are resized to this square size (pixels).
  c.data.face_views = 8  # Augmented views per embedded default face (flips, crops, brightness).
  c.data.max_default_faces = 0  # Use only the first N default identities (0 = all 101); tests use fewer.
  c.data.face_embedding = 'dlib'  # 'dlib' (128-d, ships offline) or 'network' (faces/network.py, 512-d).
  c.data.face_weights = ''  # .npz weights of the 'network' face embedding (format: face2music_jax/faces/network.py).
  c.data.embedding_dim = 128  # Width of the face embedding: 128 for dlib, 512 for the VGGFace2 network.
  # An .npz of this data (`face2music export_data`): when set, training and evaluation read the notes and faces from
  # it, without TensorFlow, TFDS or dlib (data/exported.py), and nothing is built.
  c.data.exported = ''

  # The SoundFont notes builder (NSynth format): 4 s notes, held 3 s then released.
  c.notes = ml_collections.ConfigDict()
  c.notes.soundfont = ''  # '' = pretty_midi's TimGM6mb.sf2; or a path such as /usr/share/sounds/sf2/FluidR3_GM.sf2.
  c.notes.renderer = 'tinysoundfont'  # 'tinysoundfont' (pip only) or 'fluidsynth' (needs Debian's libfluidsynth3).
  c.notes.programs = ml_collections.ConfigDict(GM_PROGRAMS)
  c.notes.pitch_min = 24
  c.notes.pitch_max = 96
  c.notes.pitch_step = 1
  c.notes.velocities = (50, 75, 100, 127)
  # (GM program, MIDI pitch) pairs never rendered: TimGM6mb.sf2's tenor sax (66) has no sample for key 64, and
  # the builder rejects silent notes.
  c.notes.exclude = ((66, 64),)

  # Models. Widths follow WaveGAN's `d` (model dimensionality); the paper size is WaveGAN's d=64.
  c.model = ml_collections.ConfigDict()
  # 'harmonic' (the product's: a harmonic-plus-noise synthesiser, DDSP) or 'wavegan' (the paper's). Every size uses
  # the harmonic one but `paper`, the paper's own model. The harmonic generator makes in-tune, tonal notes within a
  # CPU budget; the WaveGAN does not (docs/experiments.md). `--config.model.generator=wavegan` trains it at any size.
  c.model.generator = 'harmonic'
  c.model.discriminator_dim = 64
  c.model.kernel_size = 25
  c.model.stride = 4
  c.model.num_layers = 5  # Transposed convs in G / strided convs in D; length must divide by stride**num_layers.
  c.model.phase_shuffle = 2
  # Harmonic bands K of D's second branch, which sees each note's energy around its first K harmonics frame by
  # frame (models/discriminator.py; 0 = none, WaveGAN's D alone).
  c.model.discriminator_harmonics = 0
  # The WaveGAN generator (models/generator.py: WaveGANGenerator; docs/experiments.md measures its options). It
  # shares kernel_size, stride and num_layers with the discriminator.
  c.model.wavegan = ml_collections.ConfigDict()
  c.model.wavegan.dim = 64  # WaveGAN's d: the width of G's last layer (x16 at its first).
  c.model.wavegan.upsample = 'transposed'  # 'transposed' (WaveGAN), 'nearest' or 'linear' upsampling + stride-1 conv.
  c.model.wavegan.pitch_input = False  # Feed a learned pitch embedding to G's first layer beside the face.
  c.model.wavegan.post_filter = 0  # Taps of WaveGAN's learned post-processing filter on G's output (0 = none).
  c.model.aux_features = (128, 64, 32, 16, 1)
  # Notes the auxiliary discriminator judges together (PacGAN; 1 = the paper's, one at a time); > 1 needs 'hinge'.
  c.model.aux_pack = 1
  # Condition the auxiliary discriminator on the notes' pitch (a projection, as D's, without spectral
  # normalisation): A then compares a note's phi(y) with real notes of its own pitch (docs/experiments.md, real
  # photos, fifth round: not adopted).
  c.model.aux_pitch_conditional = False
  # The harmonic generator (models/generator.py: HarmonicGenerator).
  c.model.harmonic = ml_collections.ConfigDict()
  c.model.harmonic.hidden = 256
  c.model.harmonic.channels = 128
  c.model.harmonic.num_harmonics = 100
  # The harmonic distribution read off a spectral envelope of this many log-spaced bands (lowest fundamental to
  # Nyquist), a function of frequency, instead of a weight per harmonic index (0). A weight per index let notes hold a
  # few isolated upper partials above a near-silent middle, which pYIN misreads; 32 bands gathered the photos' notes on
  # fewer families and made more near-sines (docs/experiments.md, real photos, twenty-seventh round: not adopted).
  c.model.harmonic.envelope_bands = 0
  # Partials at or above this frequency are silent (Hz; 0 = up to Nyquist). The real notes of the data hold at most
  # 1.1% of a note's energy above 6 kHz; one strong partial above about 5 kHz makes pYIN misread a note's pitch
  # (docs/experiments.md, real photos, twenty-fifth round: 6 kHz, not adopted; G moved its energy below the bound).
  c.model.harmonic.max_partial_hz = 0.0
  c.model.harmonic.noise_bands = 65
  c.model.harmonic.frames = 16  # Control frames over the note (8192 samples: one every 32 ms).
  c.model.harmonic.num_blocks = 2
  # Bound of each noise band's magnitude, relative to the frame's harmonic amplitude (relative_noise): the noise
  # stays below the tone whatever the GAN learns. With DDSP's absolute bound (noise_max 2, relative_noise False)
  # 2 of 3 seeds drifted to notes whose low-frequency noise made pyin call a third to half of MIDI 48 and 60
  # unvoiced (docs/experiments.md rows 11-14).
  c.model.harmonic.noise_max = 0.05
  c.model.harmonic.relative_noise = True
  # The fundamental's share of the harmonic amplitude, at least: with none, faces of real photos got notes whose
  # fundamental carried 4-12% of the energy at MIDI 72, heard an octave low (docs/experiments.md). 0.1 spread the
  # notes over more families at 7 paired seeds, not at 9, and resolved nothing else (real photos, fifteenth round).
  c.model.harmonic.fundamental_floor = 0.2
  # The floor at high pitches (0 = fundamental_floor at every pitch): it rises linearly from fundamental_floor at the
  # first MIDI pitch of fundamental_floor_pitches to this at the second and above, as real notes' upper partials
  # fall away at high pitches. With 0.2 at every pitch a few photo faces' notes at MIDI 72 were heard an octave low
  # (2 of 97 at seed 1, 1 at seed 2); with 0.45 none at seeds 0-2 (docs/experiments.md, "Real photos", ninth and
  # tenth rounds).
  c.model.harmonic.fundamental_floor_high = 0.45
  c.model.harmonic.fundamental_floor_pitches = (60, 72)
  # One harmonic distribution per note (from the conditioning vector) instead of one per control frame: the
  # translations' partials swung by a median 34.5 dB within a note, real notes' by 5.6 dB (docs/experiments.md,
  # real photos, fifth round: not adopted, it cost in-tune notes at MIDI 72; sixth round, with fundamental_floor
  # 0.3 over three seeds: not adopted, fewer families and a higher FID-pitch).
  c.model.harmonic.steady_harmonics = False
  # Each partial's start phase predicted per note (initially random), instead of 0 for all: with every partial
  # starting at phase 0 a harmonic-rich note has one waveform shape, which D tells from real notes.
  c.model.harmonic.learned_phases = False
  # Standardise each dimension of f(x) by the training faces' statistics (batch norm) before the network sees it.
  c.model.harmonic.normalize_face = True
  # What standardises the faces in training: 'batch' (each batch by its own statistics; G never meets a batch whose
  # faces lie off the training faces' mean) or 'fixed' (the training faces' statistics, fitted once before the first
  # step, as at translation). 'fixed' spread the held-out faces' notes more and the photos' less at seeds 0-2
  # (docs/experiments.md, real photos, twenty-ninth round).
  c.model.harmonic.face_norm = 'batch'
  # Project f(x) onto the first face_components principal components of the training faces before G sees it, the
  # basis fitted once on them and kept in G's variables (0 = none): photos vary most along directions in which the
  # training crops barely vary, where G's response was noise in the sound. 40 components hold 91% of the training
  # faces' variance; over seeds 0-2 they raised the photos' independent Pearson and families at every seed
  # (docs/experiments.md, "Real photos, fourth round").
  c.model.harmonic.face_components = 40
  c.model.audio_embedding_dim = 64  # Width of the triplet-trained audio embedding (before MFCC concatenation).
  c.model.audio_embedding_channels = 32
  c.model.classifier_channels = 32

  # MFCC, as librosa.feature.mfcc with these parameters; phi(y) uses their mean over time, centred and scaled.
  c.mfcc = ml_collections.ConfigDict()
  c.mfcc.n_mfcc = 20
  c.mfcc.n_fft = 1024
  c.mfcc.hop_length = 256
  c.mfcc.n_mels = 64
  c.mfcc.fmin = 0.0
  c.mfcc.fmax = 8000.0
  c.mfcc.top_db = 80.0

  # GAN training.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64
  c.train.num_steps = 100_000
  c.train.loss = 'hinge'  # 'hinge' (projection-discriminator recipe) or 'wgan-gp'.
  c.train.gp_weight = 10.0
  c.train.d_steps = 1  # Discriminator updates per generator update.
  c.train.g_lr = 1e-4  # TTUR: the discriminators learn faster than the generator.
  c.train.d_lr = 4e-4
  c.train.aux_lr = 4e-4
  c.train.adam_b1 = 0.0
  c.train.adam_b2 = 0.9
  c.train.adam_eps = 1e-8
  # Exponential moving average of G's parameters (0 = none): evaluation, translation, export and training's sample
  # WAVs use the average, training the live parameters. The decay ramps up as min(g_ema_decay, (1 + t) / (10 + t))
  # at step t, so that the average forgets G's initialisation early.
  c.train.g_ema_decay = 0.0
  c.train.use_metric_loss = True
  c.train.metric_weight = 1.0
  c.train.metric_warmup_steps = 0  # Linear ramp of metric_weight from 0 over these steps (0 = none).
  # Which pairs Eq. 1 compares. 'batch' (the paper): all pairs of the batch, each note at its own pitch, so that
  # audio distances mix timbre with pitch. 'one_pitch': G translates the batch's faces once more at one pitch drawn
  # from the batch, and Eq. 1 compares those notes (mu_y and sigma_y then come from real notes of one pitch): faces
  # that look alike are asked to sound alike at the same pitch, as a listener compares them. Harmonic generator only.
  c.train.metric_pairs = 'batch'
  # Where Eq. 1 measures the notes' distances. 'phi' (the paper): the whole audio metric, two thirds of whose
  # distances are its conv half, trained on instrument families. 'mfcc': phi's MFCC half alone (the notes' MFCC
  # means, the ruler of the evaluation's independent Pearson and of a listener's timbre comparisons). 'both': Eq. 1
  # in phi plus Eq. 1 in its MFCC half, each standardised by the real notes' distances in its own space. Over seeds
  # 0-4, 'both' raised the photos' independent Pearson (+0.046 +- 0.043, at four of five) and their families (+0.92
  # +- 1.18), and the held-out faces' Pearson on the MFCC ruler (+0.11 at seeds 0-2); 'mfcc' alone gathered the
  # notes on fewer families (docs/experiments.md, "Real photos", nineteenth round).
  c.train.metric_features = 'both'
  # Added to every pair's standardised face distance in Eq. 1 (0 = the paper's): the notes of any two faces are
  # asked to lie metric_shift standard deviations of the real notes' distances farther apart than the faces'
  # distance alone asks. Face noise in dimensions G cannot see did this by enlarging the faces' distances
  # (docs/experiments.md, seventh round); this asks for it without noise.
  c.train.metric_shift = 0.0
  # Each face of G's batch (the last sub-batch: G's update and the last D update) moved away from the batch's mean
  # by a factor drawn from [1, face_spread] (1 = none), for G and Eq. 1 alike: the embeddings of the 25x25 training
  # crops lie nearer their mean than those of sharp photos.
  c.train.face_spread = 1.0
  # Isotropic Gaussian noise added to each face of G's batch (after face_spread; G's update and the last D update),
  # for G and Eq. 1 alike, with a standard deviation of face_noise times the batch's RMS spread per dimension (0 =
  # none): the training crops' embeddings vary in few directions (40 principal components hold 91% of their
  # variance), photos' in more. Eq. 1's mu_x and sigma_x stay those of the clean faces.
  c.train.face_noise = 0.0
  # Where face_noise lies. 'embedding': all E dimensions, scaled by the batch's RMS spread per dimension.
  # 'projection': only the directions G sees through model.harmonic.face_components (its fitted face space), scaled by
  # the batch's RMS spread per direction of that space, so that Eq. 1 compares no noise G cannot see. The scales
  # differ: the embedded faces' spread per direction is 1.7x larger in their first 40 directions than over all 128,
  # so face_noise 0.44 in 'projection' gives G the noise that 0.75 in 'embedding' gives it in those directions.
  c.train.face_noise_space = 'embedding'
  c.train.use_aux_discriminator = True
  c.train.aux_weight = 0.1
  # Weight of the R1 penalty on the auxiliary discriminator (its squared gradient w.r.t. phi at the real notes,
  # Mescheder et al. 2018); 0 = none (the paper's A). Without it A separates real notes from
  # translations by a margin for most of a run (aux_d_loss 0.16-0.52 after step 1000 at `small`, 2 at chance).
  c.train.aux_r1_weight = 0.0
  # Weight of the family-marginal loss on G (0 = none): the KL divergence from the real batch's mean soft family
  # assignment to the translations' (each note's assignment a softmax over its squared distances in phi to the real
  # training notes' family centroids, fitted before the first step; the real and generated notes of a batch share
  # their pitches). Mode-covering where A's adversarial loss is mode-seeking: a batch whose translations miss a
  # family the real notes of those pitches hold is pulled towards it, whichever faces go there is Eq. 1's to say.
  # 0 here; the `aux` config sets 0.25 for the harmonic generator. At `small`'s first widths it spread the held-out
  # faces' notes over more families and gathered the photos' on fewer (docs/experiments.md, real photos, seventeenth
  # round); at twice those widths it spread the held-out faces' at every seed, and the photos' at some runs while one
  # run of five gathered them on near-sines (twenty-seventh and twenty-eighth rounds).
  c.train.family_marginal_weight = 0.0
  # Whose notes the family-marginal loss hears (0 = G's batch, the translations D judges). A factor s > 0: as many
  # more faces, drawn from a Gaussian with the batch's mean and s^2 times its covariance (within the span of its
  # faces), translated as G translates a face it never saw (its batch norm on the running statistics, not the
  # batch's); no D, A or Eq. 1 hears them (but see family_faces_judged). In G's standardised input the faces of real
  # photos lie farther out than the training faces (radius 13.1 against 11.6 for the shipped model, their mean 5.0
  # off), where G, whose batch norm standardises every training batch, never trains (docs/experiments.md, real
  # photos, twenty-fourth round). Costs one more G pass of B faces a step.
  c.train.family_faces_spread = 0.0
  # With family_faces_spread > 0: D's adversarial loss and pitch head judge those faces' notes in G's objective too, as
  # they judge the batch's (D does not train on them; A and Eq. 1 still do not hear them). One more D pass a step.
  c.train.family_faces_judged = False
  # With family_faces_spread > 0: where those faces lie. '' = around the batch's mean. A faces file (`face2music
  # export_data --config=C --photos=DIR --out=F.npz`, of the config's face embedder): around the mean of its faces, with
  # the same covariance, so that the loss hears notes of faces where that photo domain lies (its mean is read once,
  # kept in the workdir's family_faces_center.json and used on resumption).
  c.train.family_faces_center = ''
  # With family_faces_spread > 0: the family-marginal loss on G's batch too, at this weight (0 = the wide faces
  # only), each set's KL against the real notes its own, so that spreading the wide faces' notes cannot gather the
  # batch's (docs/experiments.md, real photos, twenty-sixth round).
  c.train.family_batch_weight = 0.0
  # With family_faces_spread > 0: the wide faces of each step moved together by one offset, drawn from a Gaussian with
  # family_faces_shift^2 times the batch's covariance (0 = none), so that the loss asks populations of faces moved as a
  # photo domain is (about 0.4 of the training faces' standard deviation per principal direction) to spread over the
  # real notes' families. At 0.5 over seeds 0-2 it gathered the photos' notes more (docs/experiments.md, real photos,
  # twenty-ninth round).
  c.train.family_faces_shift = 0.0
  # Weight of the fundamental-share matching loss on G (0 = none): the 1-Wasserstein distance between the shares of
  # the fundamental in the energy of the first 8 harmonic bands (listening's pure-tone measure) of G's notes and of
  # the real notes of the same pitches, within bands of share_matching_band semitones (octaves; 0 = the whole
  # sub-batch). The held-out faces' notes are near-sines 2-4 times as often as real notes; at weight 4 in octaves it
  # made them as rare as real notes' at seeds 0-2, spread the notes over no more families and cost the photos'
  # independent Pearson at two seeds (docs/experiments.md, real photos, twenty-second round).
  c.train.share_matching_weight = 0.0
  c.train.share_matching_band = 12
  # What the auxiliary discriminator sees of phi's MFCC half: 'phi' (phi(y) as Eq. 1 does, the paper's A) or
  # 'coefficient' (each MFCC coefficient rescaled by its own spread over the real training notes, keeping the half's
  # RMS): with phi's pooled MFCC scale, A would otherwise see mostly c0, the note's level, and little of its timbre.
  # The scale is fitted once before the first step and kept in A's variables (`input_scale`).
  c.train.aux_mfcc_scale = 'phi'
  # Weight of the auxiliary pitch classification (AC-GAN) loss of D's pitch head on real notes, and of G's notes
  # on it; 0 = no pitch head (the projection discriminator alone). With it, G is pushed to the requested pitch
  # rather than an octave above it (docs/experiments.md).
  c.train.pitch_classification_weight = 1.0
  c.train.nonfinite = 'stop'  # 'stop' (keep last good checkpoint) or 'skip' (drop the update, count it).
  # 'float32' or 'bfloat16': the dtype of G's and D's matmuls, convolutions and activations (mixed precision).
  # Parameters, optimiser states, batch-norm and spectral-norm statistics, G's waveform, phi (MFCC and the audio
  # embedding), A and every loss stay float32 either way. bfloat16 is meant for accelerators with bfloat16 matrix
  # units (GPUs, TPUs).
  c.train.dtype = 'float32'
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 5000
  c.train.num_sample_faces = 8

  # Prerequisite stages.
  c.audio_embedding = ml_collections.ConfigDict()
  c.audio_embedding.num_steps = 4000
  c.audio_embedding.batch_size = 64
  c.audio_embedding.lr = 1e-3
  c.audio_embedding.margin = 0.2
  c.audio_embedding.mining = 'semi_hard'  # 'semi_hard' or 'batch_hard' (batch_hard collapsed here: loss = margin).
  # phi's MFCC half: 'pooled' divides every coefficient by one scale (the root mean variance over the training
  # notes), keeping the MFCC means' geometry, in which c0 (the level) spreads most, so Eq. 1 and A weigh a note's
  # level as the MFCC distances do; 'coefficient' (before 2026-12-06) standardises each by its own std.
  c.audio_embedding.mfcc_scale = 'pooled'

  c.classifiers = ml_collections.ConfigDict()
  c.classifiers.num_steps = 4000
  c.classifiers.batch_size = 64
  c.classifiers.lr = 1e-3

  c.stats = ml_collections.ConfigDict()
  c.stats.num_pairs = 100_000  # Sampled pairs for the dataset-wide mean/std of pairwise distances.
  c.stats.max_examples = 4096

  c.eval = ml_collections.ConfigDict()
  c.eval.num_translations = 2000
  c.eval.seed = 1
  c.eval.batch_size = 64
  c.eval.num_page_examples = 32  # Faces with their translated notes on the HTML page.
  c.eval.faces_per_family = 10  # Faces per row (family) of the face grid figure.
  # Listening measures (audio/listening.py): translations of held-out faces at these MIDI pitches (those within
  # audio.pitch_min..pitch_max), with the real test notes, white noise and harmonic tones as reference rows.
  c.eval.listening_pitches = (36, 48, 60, 72)
  c.eval.listening_faces = 40  # Held-out (test) faces translated at each listening pitch, all identities first.

  if size == 'small':
    _small(c)
  elif size == 'tiny':
    _tiny(c)
  else:
    _paper(c)
  return c


def _paper(c: ml_collections.ConfigDict) -> None:
  """The paper's WaveGAN (d=64, batch 64) with the changes that made it write in-tune notes on a GPU.

  Measured on an H100 (docs/experiments.md, aux, ~12k steps): the plain WaveGAN (transposed convolutions,
  TTUR 1e-4 / 4e-4, Adam b1 0) reached 74% in tune, FID-pitch 23, IS-pitch 30; with these changes 85%, FID-pitch
  4.1, IS-pitch 48 (real notes: 49.6). `--config.model.wavegan.upsample=transposed
  --config.model.wavegan.pitch_input=False --config.model.wavegan.post_filter=0 --config.train.pitch_classification_weight=0 --config.train.g_lr=1e-4
  --config.train.d_lr=4e-4 --config.train.adam_b1=0 --config.train.metric_warmup_steps=0` restores the paper's.
  """
  c.model.generator = 'wavegan'  # The paper's model.
  c.model.wavegan.upsample = 'nearest'
  c.model.wavegan.pitch_input = True
  c.model.wavegan.post_filter = 512
  c.train.g_lr = 2e-4
  c.train.d_lr = 2e-4
  c.train.adam_b1 = 0.5
  c.train.metric_warmup_steps = 1000


def _small(c: ml_collections.ConfigDict) -> None:
  """A model that trains on 2 CPU cores in minutes, on the embedded default data."""
  c.notes.velocities = (75, 127)
  c.model.wavegan.dim = 16
  c.model.discriminator_dim = 16
  c.model.audio_embedding_dim = 32
  c.model.audio_embedding_channels = 16
  c.model.classifier_channels = 16
  # Twice the widths of the first `small` (128, 64): no cost in time on 2 cores, and with the `aux` config's
  # family-marginal loss the translations spread over more families (docs/experiments.md, real photos, twenty-seventh
  # round); four times them gathered the photos.
  c.model.harmonic.hidden = 256
  c.model.harmonic.channels = 128
  c.model.harmonic.num_harmonics = 64
  c.model.harmonic.noise_bands = 33
  c.train.batch_size = 16
  c.train.num_steps = 4000
  c.train.checkpoint_every = 500
  c.train.sample_every = 1000
  c.audio_embedding.num_steps = 1000
  c.audio_embedding.batch_size = 32
  c.classifiers.num_steps = 3000  # 1000 gave 0.946 / 0.887 (seed 0) and family 0.815 (seed 2): docs/experiments.md
  c.classifiers.batch_size = 32
  c.stats.num_pairs = 20_000
  c.stats.max_examples = 1024
  c.eval.num_translations = 400


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Smallest sizes, for tests: a few notes, a few faces, a few steps."""
  c.audio.pitch_min = 48
  c.audio.pitch_max = 60
  c.notes.programs = ml_collections.ConfigDict({'bass': (33,), 'flute': (74,), 'keyboard': (1,), 'string': (41,)})
  c.notes.pitch_min = 48
  c.notes.pitch_max = 60
  c.notes.pitch_step = 2
  c.notes.velocities = (100,)
  c.data.shuffle_buffer = 64
  c.data.face_views = 2
  c.data.max_default_faces = 20
  c.model.wavegan.dim = 2
  c.model.discriminator_dim = 2
  c.model.harmonic.hidden = 16
  c.model.harmonic.channels = 8
  c.model.harmonic.num_harmonics = 16
  c.model.harmonic.noise_bands = 9
  c.model.audio_embedding_dim = 8
  c.model.audio_embedding_channels = 4
  c.model.classifier_channels = 4
  c.train.batch_size = 8
  c.train.num_steps = 4
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.train.sample_every = 2
  c.train.num_sample_faces = 2
  c.audio_embedding.num_steps = 3
  c.audio_embedding.batch_size = 8
  c.classifiers.num_steps = 3
  c.classifiers.batch_size = 8
  c.stats.num_pairs = 500
  c.stats.max_examples = 64
  c.eval.num_translations = 16
  c.eval.batch_size = 8
