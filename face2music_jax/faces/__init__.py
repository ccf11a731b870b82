"""The face side: photos in, face embeddings f(x) out, and the face records that hold them.

  network.py    the Flax Inception-ResNet-v1 (FaceNet), its weights file, `CropEmbedder` (the network on crops as
                given) and triplet refinement
  convert.py    facenet-pytorch state dict -> weights file; the `convert` and `refine` command line
  refine.py     refinement on face TFRecords (the `refine` subcommand)
  embedding.py  the `Embedder` protocol, dlib alignment, `DlibFaceEmbedder` and `FaceNetworkEmbedder` (the network on
                dlib-aligned chips), `make_embedder(config)`
  records.py    the face TFRecords: format, checked reading, the converter and the `embed` tool
  images.py     photo loading: upright, 8 bits, size checked from the header

Dependencies go one way: `face2music_jax.data` (the model's inputs, the default faces), the evaluators, translation
and serving import this package; it imports neither `face2music_jax.data` nor `face2music_jax.models`
(tests/test_layout.py checks).
"""
