"""Reading a competition download: its files, layout, labels and images, decoded once to uint8 arrays."""
