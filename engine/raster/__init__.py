"""Raster stages of detection: pair the dates, radiometry, tile grid, blending, GeoTIFF output."""
