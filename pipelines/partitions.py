"""One partition per series; the queue sensor adds them as jobs arrive."""

import dagster as dg

SERIES = "series"
series_partitions = dg.DynamicPartitionsDefinition(name=SERIES)
