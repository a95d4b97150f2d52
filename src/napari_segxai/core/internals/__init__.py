"""Inside the network: its layer tree, feature maps, filters, activation maximisation and a readable surrogate."""
