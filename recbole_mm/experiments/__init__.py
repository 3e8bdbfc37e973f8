"""What runs experiments over the models: the results writer shared by the benchmark and the search."""
