"""orgaseg in napari (the ``orgaseg[napari]`` extra; npe2 manifest ``napari.yaml``).

- :mod:`~orgaseg.napari.reader`: opens orgaseg outputs (segmentations, named labels,
  instance volumes) as labels layers with their names, colours, voxel size and provenance, and
  other volumes orgaseg reads (ImageJ or OME-TIFF, OME-Zarr images) as image layers at their
  voxel size and place;
- :mod:`~orgaseg.napari.writer`: saves a labels layer with its names (OME-Zarr or TIFF);
- :class:`~orgaseg.napari.segment_widget.SegmentWidget`: ``orgaseg.segment`` on an image layer;
- :class:`~orgaseg.napari.naming_widget.NamingWidget`: names clusters from clicks;
- :class:`~orgaseg.napari.measure_widget.MeasureWidget`: the morphometrics table, with the
  selected instance highlighted.

Long calls run in a thread worker with progress in the status bar and a cancel button
(:mod:`~orgaseg.napari.tasks`). Nothing here is imported by ``import orgaseg``.
"""
