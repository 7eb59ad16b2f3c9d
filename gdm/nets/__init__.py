"""Plain nn.Modules: generators, discriminators, classifiers. They know nothing of Lightning."""
