"""The main job: every loss x seed trained, evaluated and reported, inline or as cluster jobs."""
