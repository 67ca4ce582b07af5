"""napari dock widgets: thin Qt front-ends over the computation modules (one module per widget)."""
