"""The detection core: what every detection run needs, knowing nothing of scenes or sheets.

A front end (:mod:`engine.detect` for one scene, :mod:`engine.sheets` for map sheets) calls
it in four steps, each callable alone::

    options = validate_options(...)            # options.py: every option mistake, before anything is read
    engine = load_engine(model, options)       # predictors.py: model + runtime, once per process
    plan = plan_area(pair, engine, options)    # plan.py: tile grid + radiometry of the whole area
    stats = run_window(pair, plan, engine, window, prob_path=..., mask_path=...)   # runner.py: any window

The runner is the middle of the flow read → pair → tile → infer → blend → write →
vectorize: its reader thread (threads.py) reads and normalises tiles through the pair
(:mod:`engine.raster.pair`, :mod:`engine.raster.radiometry`, :mod:`engine.raster.tiles`),
the predictor infers, :mod:`engine.raster.blend` blends the overlapping tiles, and the
writer thread writes GeoTIFF strips (:mod:`engine.raster.write`). Vectorizing
(:mod:`engine.vector`) and committing the outputs are the front ends' business.

The package imports nothing heavy itself: import the module you need (torch only loads
when a :class:`~engine.core.predictors.ModelPredictor` is made).
"""
