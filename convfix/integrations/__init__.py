"""What convfix wraps in TensorFlow and Keras, and how it is patched and unpatched."""
