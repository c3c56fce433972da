"""File x weight grids of what a run trained: the Compare sub-tab, `compare` and the X/Y/Z axes use them."""
