"""The method: base losses (losses), the neural-collapse regularizers L_W and L_B with their centres
(regularizers; Liu et al., AISTATS 2023), the NC metrics (metrics) and their streamed form (nc_stream)."""
