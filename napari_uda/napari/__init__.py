"""The napari plugin: the npe2 contributions (reader, writer, sample data), the dock widgets (thin Qt
front-ends, one module each) and the demo that opens them on the sample data. The only package
that imports napari, Qt or magicgui.

May import: core, evaluate, segment, translate, pseudo, review, data, pipeline, cluster.
"""
