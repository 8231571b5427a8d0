"""The synthetic demo set: a chest-like radiograph painter, the demo drawn from a seed, and one table
writer per preset layout. Only the demo stage uses it; the data layer reads tables and never imports it,
so editing the painter reruns the demo stage alone."""
