"""What a study leaves: its folder (study_folder), Tune's experiment read into Parquet (results),
tables, figures and the report (report), and the one text rule for values (formatting)."""
