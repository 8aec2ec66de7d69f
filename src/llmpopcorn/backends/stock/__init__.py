"""Free stock footage as renderers: a real photo for the cover and a real clip, found by the
idea's keywords on Pexels or Pixabay (free API keys), cut to 9:16 and 3 s, with the title
drawn on as the draft renderers draw it, and the author and licence recorded.

``base`` holds what both providers share (search order, vertical first, download through the
project's outbound policy, PyAV decoding, the title, the credit); ``pexels`` and ``pixabay``
are each only their API's shape. May import ``core`` and the other backends' helpers
(``hosted`` for keys and HTTP, ``draw``/``media`` via the draft renderers).
"""
