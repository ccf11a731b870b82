"""face2music_jax: translate images of faces into musical notes, so that faces that look alike sound alike.

  from face2music_jax import Translator      # face2music_jax/translator.py
  model = Translator.load()                  # the shipped model

`Translator` is imported when first asked for, so that `import face2music_jax` (every command's first step) stays
quick and imports neither JAX nor TensorFlow.
"""

__all__ = ['Translator']


def __getattr__(name: str):
  if name == 'Translator':
    from face2music_jax.translator import Translator  # pylint: disable=import-outside-toplevel
    return Translator
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
