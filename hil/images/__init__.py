"""Guest images: recipes in ``guests/`` turned into cached, content-addressed base images."""
