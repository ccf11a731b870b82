"""The live page: a local web server where a person drops a photo and hears each face (command: face2music serve).

Built on Starlette (an ASGI toolkit: small, typed, well kept, with multipart uploads and a test client) served by
uvicorn; the model runs in a worker thread. Routes:

  GET  /                the page (assets/web/index.html): drop or choose a photo, or take one with the camera
  GET  /api/info        the model's pitch range and the upload limit
  POST /api/translate   multipart: photo (file), pitch (MIDI number or note name), melody (optional note list) ->
                        JSON {faces: [{box, audio: WAV data URL}], image: the photo as a data URL, width, height,
                        pitch, pitch_name, melody}

Bad input gets a JSON {error} with a 4xx status and a message the page shows: an upload over `max_upload_bytes`
(413), not an image or a corrupt one, a decompression bomb (more than `max_image_pixels`), a bad pitch or melody
(400), no face (422), more than `max_faces` faces (422). At most `max_concurrent` translations run at once; another
request gets 503 "busy" at once rather than queueing towards memory exhaustion.
"""

import base64
import dataclasses
import io
import os
import threading
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.responses import JSONResponse
from starlette.routing import Route

from face2music_jax import translator as translator_lib
from face2music_jax.audio import melody as melody_lib
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import images as images_lib

PAGE = os.path.join(os.path.dirname(__file__), 'assets', 'web', 'index.html')


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask for.

  Attributes:
    max_upload_bytes: the largest photo upload.
    max_image_pixels: the largest image (width x height), checked from its header before decoding.
    max_faces: the most faces translated in one photo.
    max_concurrent: translations running at once; more requests are answered 'busy'.
    max_melody_s: the longest melody.
    display_side: the photo sent back for display is shrunk to at most this many pixels a side.
  """
  max_upload_bytes: int = 15_000_000
  max_image_pixels: int = 40_000_000
  max_faces: int = 30
  max_concurrent: int = 2
  max_melody_s: float = 30.0
  display_side: int = 1280


class RequestError(ValueError):
  """A request that cannot be answered; `status` is its HTTP status."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def wav_data_url(audio: np.ndarray, sample_rate: int) -> str:
  """16-bit PCM WAV as a data URL (the page's players and download links use it)."""
  import soundfile  # pylint: disable=import-outside-toplevel
  encoded = io.BytesIO()
  soundfile.write(encoded, np.clip(audio, -1, 1), sample_rate, subtype='PCM_16', format='WAV')
  return 'data:audio/wav;base64,' + base64.b64encode(encoded.getvalue()).decode()


def _image_data_url(pixels: np.ndarray, side: int) -> str:
  picture = Image.fromarray(pixels)
  picture.thumbnail((side, side))
  encoded = io.BytesIO()
  picture.save(encoded, 'JPEG', quality=88)
  return 'data:image/jpeg;base64,' + base64.b64encode(encoded.getvalue()).decode()


def translate_upload(translator: translator_lib.Translator, data: bytes, pitch: str, melody: str,
                     limits: Limits) -> dict[str, Any]:
  """One request's work (runs in a worker thread): the photo's faces and their notes (module docstring).

  Raises:
    RequestError: with the message and status the page shows.
  """
  try:
    midi = translator.midi(pitch)
    notes = melody_lib.parse(melody) if melody else None
    for note in notes or ():
      translator.midi(note.midi)
    melody_lib.check_length(notes or (), limits.max_melody_s)
  except ValueError as e:
    raise RequestError(str(e)) from e
  try:
    pixels = images_lib.decode_rgb(data, limits.max_image_pixels)
  except images_lib.ImageError as e:
    raise RequestError(f'That file is not a photo this page can read: {e}') from e
  try:
    embeddings, boxes = translator.faces(pixels, max_faces=limits.max_faces)  # Counted before any is embedded.
  except translator_lib.NoFaceError as e:
    raise RequestError(
        'No face found in the photo. Try a photo where faces are upright, lit and at least about '
        '80 pixels wide.', 422) from e
  except face_embedding.TooManyFacesError as e:
    raise RequestError(
        f'{e.count} faces found; this page translates at most {e.limit} at once. Try a photo with fewer people.',
        422) from e
  if notes is not None:
    audio = [translator.render_melody(z, notes) for z in embeddings]
  else:
    audio = list(translator.generate(embeddings, np.full(len(embeddings), midi)))
  height, width = pixels.shape[:2]
  return {
      'faces': [{
          'box': [int(v) for v in box],
          'audio': wav_data_url(clip, translator.sample_rate)
      } for box, clip in zip(boxes, audio)],
      'image': _image_data_url(pixels, limits.display_side),
      'width': width,
      'height': height,
      'pitch': midi,
      'pitch_name': melody_lib.note_name(midi),
      'melody': melody or None,
  }


def make_app(translator: translator_lib.Translator, limits: Limits = Limits()) -> Starlette:
  """The web app over a loaded model."""
  slots = threading.BoundedSemaphore(limits.max_concurrent)

  async def page(request: Request) -> FileResponse:
    del request
    return FileResponse(PAGE, media_type='text/html')

  async def info(request: Request) -> JSONResponse:
    del request
    low, high = translator.pitch_range
    return JSONResponse({
        'pitch_min': low,
        'pitch_max': high,
        'max_upload_bytes': limits.max_upload_bytes,
        'model': translator.manifest.get('name', translator.source)
    })

  async def translate(request: Request) -> JSONResponse:
    length = request.headers.get('content-length')
    if length is not None and length.isdigit() and int(length) > limits.max_upload_bytes + 100_000:
      return JSONResponse({'error': f'The photo is larger than {limits.max_upload_bytes // 1_000_000} MB.'}, 413)
    if not slots.acquire(blocking=False):
      return JSONResponse({'error': 'The server is busy with other photos: try again in a moment.'}, 503)
    try:
      try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=limits.max_upload_bytes)
      except Exception as e:  # pylint: disable=broad-except  (multipart's errors for a malformed or huge part)
        return JSONResponse({'error': f'The upload could not be read: {e}'}, 400)
      upload = form.get('photo')
      if upload is None or isinstance(upload, str):
        return JSONResponse({'error': 'No photo was sent.'}, 400)
      data = await upload.read(limits.max_upload_bytes + 1)
      if len(data) > limits.max_upload_bytes:
        return JSONResponse({'error': f'The photo is larger than {limits.max_upload_bytes // 1_000_000} MB.'}, 413)
      pitch = str(form.get('pitch') or '60')
      melody = str(form.get('melody') or '').strip()
      try:
        answer = await run_in_threadpool(translate_upload, translator, data, pitch, melody, limits)
      except RequestError as e:
        return JSONResponse({'error': str(e)}, e.status)
      return JSONResponse(answer)
    finally:
      slots.release()

  return Starlette(routes=[
      Route('/', page),
      Route('/api/info', info),
      Route('/api/translate', translate, methods=['POST']),
  ])


def warm_up(translator: translator_lib.Translator) -> None:
  """Compiles the generator and loads the face models, so that the first request is answered at once."""
  translator.generate(np.zeros((1, translator.config.data.embedding_dim), np.float32), [translator.pitch_range[0]])
  _ = translator.embedder  # Loads dlib's models.
