"""Deploy: use a trained run outside tunelab (batch predictions on new data, exported models)."""
