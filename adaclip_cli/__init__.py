"""The `adaclip` console script: the top layer, which may import every other layer."""
