"""The numpy/torch core of napari-segxai; never imports napari, Qt or magicgui."""
