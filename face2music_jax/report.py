"""The evaluation's HTML page: faces beside their translated notes (with audio players), the metrics, the figures.

One self-contained file that refers to its images and WAV files by relative paths, so it opens from disk in any
browser (no server, no scripts, no network).
"""

import dataclasses
import html
from typing import Any

PAGE = 'index.html'

# Metric key -> (label, how to read it); the order of the table.
_METRICS = (
    ('pitch_test_accuracy', 'Pitch classifier test accuracy', 'of the classifier used for FID / IS'),
    ('family_test_accuracy', 'Family classifier test accuracy', 'of the classifier used for FID / IS'),
    ('fid_pitch', 'FID (pitch classifier)', 'lower is better; translations vs real notes'),
    ('fid_family', 'FID (family classifier)', 'lower is better; translations vs real notes'),
    ('inception_score_pitch', 'Inception Score (pitch classifier)', 'higher is better; max = {max_pitch}, '
     'real notes: {real_pitch}'),
    ('inception_score_family', 'Inception Score (family classifier)', 'higher is better; max = {max_family}, '
     'real notes: {real_family}'),
    ('pearson_correlation', 'Pearson correlation of pairwise distances', 'faces f(x) vs translations phi(y), '
     'held-out faces at one fixed pitch, mean over the listening pitches; at N drawn pitches (no face paired with '
     'itself): {random_pitch}'),
    ('pearson_mfcc', 'Pearson correlation, MFCC ruler', 'the same with the translations\' librosa MFCC means '
     'instead of phi, pairs of different people only (not trained against as a whole; the photo evaluation\'s '
     'independent Pearson)'),
    ('silhouette_value', 'Silhouette value', 'faces in face space, labelled with the family assigned to their '
     'translation; -1 to 1'),
    ('in_tune_50c', 'In tune (held-out faces)', 'fraction within 50 cents of the requested pitch (librosa.pyin); '
     'see Listening'),
    ('flatness_median', 'Spectral flatness (median)', 'lower is more tonal; real notes ~5e-6, white noise 0.56'),
    ('distinctness', 'Face distinctness', 'MFCC distance between translations of different faces / between real '
     'notes of the same pitch'),
    ('end_db_max', 'Loudest end (held-out faces)', 'dB: how far below its peak the translation that ends loudest ends '
     '(its last 10 ms); a release is at most -30 dB, a click near 0'),
    ('pure_tones', 'Pure tones (held-out faces)', 'fraction of translations whose fundamental carries more than 90% of '
     'the energy up to the 8th harmonic (a near sine); real notes at the listening pitches: {real_pure}'),
    ('effective_families', 'Families (effective number)', 'exp(entropy) of the translations\' nearest real family in '
     'phi; 1 = all one family, max = the number of families'),
    ('effective_families_classifier', 'Families named by the family classifier (effective number)',
     'the same with the family the frozen family classifier names (it is not trained against); 95% over the people '
     'drawn: {families_interval}'),
    ('effective_families_classifier_held_out', 'Families named by the family classifier, held-out faces alone',
     'of the {num_held_out} translations of held-out faces (the rows above count all {num_translations}: the held-out '
     'faces\' first, then training faces\' when there are more); 95% over the people drawn: {held_out_interval}'),
)

_STYLE = """
body { font-family: sans-serif; margin: 1em auto; max-width: 1100px; padding: 0 0.8em; color: #222; }
.scroll { overflow-x: auto; }
table.metrics { border-collapse: collapse; }
table.metrics td, table.metrics th { border-bottom: 1px solid #ccc; padding: 4px 12px; text-align: left; }
.examples { display: flex; flex-wrap: wrap; gap: 12px; }
.example { border: 1px solid #ccc; border-radius: 6px; padding: 8px; width: min(320px, 100%); box-sizing: border-box; }
.example img { width: 96px; height: 96px; image-rendering: pixelated; float: left; margin-right: 8px; }
.example audio { width: 100%; margin-top: 6px; }
.figures img { max-width: 100%; margin-bottom: 1em; display: block; }
table.listening td { vertical-align: top; padding: 6px; border-bottom: 1px solid #eee; font-size: 90%; }
table.listening img.face { width: 72px; height: 72px; image-rendering: pixelated; }
table.listening audio { width: 220px; }
"""


@dataclasses.dataclass(frozen=True)
class ListeningNote:
  """One translation at a listening pitch: `audio` relative to the page; the pitch tracker's reading."""
  audio: str
  midi_pitch: int
  f0_hz: float | None
  cents: float | None
  flatness: float


@dataclasses.dataclass(frozen=True)
class ListeningRow:
  """A held-out face with its translations at every listening pitch."""
  face: str
  name: str
  notes: list[ListeningNote]


# Listening rows: key in metrics.json's listening['rows'] -> label.
_LISTENING_ROWS = (('translations', 'Translations of held-out faces'), ('real_test_notes', 'Real test notes'),
                   ('harmonic_tone', 'Harmonic tone (reference)'), ('white_noise', 'White noise (floor)'))


@dataclasses.dataclass(frozen=True)
class Example:
  """One translated face on the page; `face` and `audio` are paths relative to the page."""
  face: str
  audio: str
  name: str
  split: str
  midi_pitch: int
  family: str


def _number(value: Any) -> str:
  if value is None:
    return 'undefined'
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def _interval(interval: dict[str, Any] | None) -> str:
  """A `metrics.family_distribution_interval` as text."""
  if interval is None:
    return 'undefined (under 5 people)'
  (low, high), (share_low, share_high) = interval['effective_number'], interval['largest_share']
  return f'{low:.2f}-{high:.2f}, largest family {share_low:.0%}-{share_high:.0%}'


def _metrics_table(summary: dict[str, Any]) -> str:
  metrics, intervals = summary['metrics'], summary.get('classified_families_intervals') or {}
  fills = {
      'families_interval': _interval(intervals.get('all')),
      'held_out_interval': _interval(intervals.get('held_out')),
      'num_held_out': intervals.get('num_translations_held_out', 'undefined'),
      'num_translations': summary.get('num_translations', 'undefined'),
      'max_pitch': metrics.get('inception_score_pitch_max'),
      'max_family': metrics.get('inception_score_family_max'),
      'real_pitch': _number(metrics.get('inception_score_pitch_real')),
      'real_family': _number(metrics.get('inception_score_family_real')),
      'random_pitch': _number(metrics.get('pearson_correlation_random_pitch')),
      'real_pure': _number(metrics.get('pure_tones_real'))
  }
  rows = [
      f'<tr><td>{html.escape(label)}</td><td>{html.escape(_number(metrics.get(key)))}</td>'
      f'<td>{html.escape(note.format(**fills))}</td></tr>' for key, label, note in _METRICS
  ]
  return ('<table class="metrics"><tr><th>metric</th><th>value</th><th>note</th></tr>' + ''.join(rows) + '</table>')


def _example(example: Example) -> str:
  e = {k: html.escape(str(v), quote=True) for k, v in dataclasses.asdict(example).items()}
  return (f'<div class="example"><img src="{e["face"]}" alt="face {e["name"]}">'
          f'<div><b>{e["name"]}</b> ({e["split"]})<br>MIDI pitch {e["midi_pitch"]}<br>assigned family: '
          f'{e["family"]}</div>'
          f'<audio controls preload="metadata" src="{e["audio"]}" aria-label="note of face {e["name"]}"></audio></div>')


def _fraction(value: float | None) -> str:
  return 'undefined' if value is None else f'{100 * value:.0f}%'


def _end(row: dict[str, Any]) -> str:
  """The loudest ending of a listening row in dB ('undefined' for an evaluation written before it was measured)."""
  end = row.get('end_db', {}).get('max')
  return 'undefined' if end is None else f'{round(end, 1) + 0.0:.1f}'  # + 0.0: a tone cut at its peak reads 0.0.


def _listening_table(listening: dict[str, Any]) -> str:
  pitches = listening['pitches']
  head = ''.join(f'<th>in tune, MIDI {p}</th>' for p in pitches)
  rows = []
  for key, label in _LISTENING_ROWS:
    r = listening['rows'][key]
    per_pitch = ''.join(f'<td>{_fraction(r["per_pitch"].get(p, r["per_pitch"].get(str(p), {})).get("in_tune_50c"))}'
                        '</td>' for p in pitches)
    rows.append(f'<tr><td>{html.escape(label)}</td><td>{_fraction(r["in_tune_50c"])}</td>'
                f'<td>{_fraction(r["in_tune_100c"])}</td>{per_pitch}<td>{_number(r["flatness"]["median"])}</td>'
                f'<td>{_number(r["rms"]["median"])} ({_number(r["rms"]["p10"])}-{_number(r["rms"]["p90"])})</td>'
                f'<td>{_fraction(r["pure_tones"])}</td><td>{_end(r)}</td>'
                f'<td>{_number(r["distinctness"]["mean"])}</td></tr>')
  return ('<table class="metrics"><tr><th></th><th>in tune (&plusmn;50 cents)</th><th>&plusmn;1 semitone</th>'
          f'{head}<th>spectral flatness (median)</th><th>RMS median (p10-p90)</th><th>pure tones</th>'
          '<th>loudest end (dB)</th><th>distinctness</th></tr>' + ''.join(rows) + '</table>')


def _pure_tones(listening: dict[str, Any]) -> str:
  pure = listening.get('pure_tones')
  if not pure:
    return ''

  def shares(by_pitch):  # Keys are ints in memory, strings in metrics.json.
    return ', '.join(f'{_fraction(by_pitch.get(p, by_pitch.get(str(p))))} at MIDI {p}' for p in listening['pitches'])

  return (f'<p>Pure tones by pitch: translations {shares(pure["translations"])}; the real notes of those pitches '
          f'{shares(pure["real_notes"])}.</p>')


def _listening_head(rows: list[ListeningRow]) -> str:
  pitches = [n.midi_pitch for n in rows[0].notes]
  return '<tr><th>face</th>' + ''.join(f'<th>MIDI {p}</th>' for p in pitches) + '</tr>'


def _listening_row(row: ListeningRow) -> str:
  cells = []
  for n in row.notes:
    heard = 'unvoiced' if n.f0_hz is None else f'{n.f0_hz:.1f} Hz, {n.cents:+.0f} cents'
    cells.append(f'<td>MIDI {n.midi_pitch}: {html.escape(heard)}<br>flatness {n.flatness:.2g}<br>'
                 f'<audio controls preload="metadata" src="{html.escape(n.audio, quote=True)}"></audio></td>')
  return (f'<tr><td><img src="{html.escape(row.face, quote=True)}" alt="face {html.escape(row.name)}" '
          f'class="face"><br>{html.escape(row.name)}</td>{"".join(cells)}</tr>')


def render_page(summary: dict[str, Any], examples: list[Example], figures: list[str],
                listening_rows: list[ListeningRow] | None = None) -> str:
  """The page's HTML.

  Args:
    summary: the contents of metrics.json (evaluate.evaluate).
    examples: the translated faces to show.
    figures: PNG paths relative to the page.
    listening_rows: held-out faces with their translations at the listening pitches.
  """
  title = f'face2music: {summary["config_name"]} ({summary["config_size"]}), step {summary["checkpoint_step"]}'
  seed = summary.get('training_seed')
  header = (f'The <b>{html.escape(summary["config_name"])}</b> model at the <b>{html.escape(summary["config_size"])}'
            f'</b> size, trained{"" if seed is None else f" with seed {seed}"} to step {summary["checkpoint_step"]}; '
            f'{summary["num_translations"]} translations of {summary["num_faces"]} faces against '
            f'{summary["num_real_notes"]} real notes (evaluation seed {summary["seed"]}). Work directory: '
            f'<code>{html.escape(summary["workdir"])}</code>. Every note lasts 0.51 s.')
  notes = ''.join(f'<p><i>{html.escape(n)}</i></p>' for n in summary.get('notes', []))
  counts = ', '.join(f'{html.escape(k)}: {v}' for k, v in summary['assigned_families'].items())
  classified = ', '.join(f'{html.escape(k)}: {v}' for k, v in summary.get('classified_families', {}).items())
  figs = ''.join(f'<img src="{html.escape(f, quote=True)}" alt="{html.escape(f, quote=True)}">' for f in figures)
  listening = ''
  if 'listening' in summary:
    l = summary['listening']
    listening = (
        f'<h2>Listening</h2><p>{l["num_faces"]} held-out faces ({l["num_identities"]} identities) '
        f'translated at MIDI {", ".join(map(str, l["pitches"]))}; pitch by librosa.pyin (median f0 of '
        'the voiced frames), flatness by librosa; distinctness = MFCC distance between translations of '
        'different faces over that between real notes, per pitch (1: as varied as real instruments). In tune: higher is '
        'better; flatness: lower is more tonal; pure tones: the fundamental carries more than 90% of the energy up to '
        'the 8th harmonic; loudest end: how far under its peak the note that ends loudest ends (its last 10 ms; a '
        'release is at most -30 dB, a click near 0).</p><div class="scroll">' + _listening_table(l) + '</div>' +
        _pure_tones(l))
    if listening_rows:
      listening += ('<h3>Held-out faces at every listening pitch: one pitch per column, so faces can be compared by '
                    'ear</h3><div class="scroll"><table class="listening">' + _listening_head(listening_rows) +
                    ''.join(_listening_row(r) for r in listening_rows) + '</table></div>')
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{header}</p>
<h2>Metrics</h2>
<div class="scroll">{_metrics_table(summary)}</div>
{notes}
<p>Translations per assigned family (nearest real family in phi): {counts}</p>
<p>Translations per family the family classifier names: {classified or 'not measured'}</p>
{listening}
<h2>More faces and their notes, at pitches drawn with the real notes (as FID and IS use them)</h2>
<div class="examples">{''.join(_example(e) for e in examples)}</div>
<h2>Figures</h2>
<div class="figures">{figs}</div>
</body></html>
"""


def write_page(path: str, summary: dict[str, Any], examples: list[Example], figures: list[str],
               listening_rows: list[ListeningRow] | None = None) -> None:
  """Writes `render_page(...)` to `path` (UTF-8)."""
  with open(path, 'w', encoding='utf-8') as f:
    f.write(render_page(summary, examples, figures, listening_rows))
