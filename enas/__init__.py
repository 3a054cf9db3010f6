"""ENAS: Efficient Neural Architecture Search via parameter sharing (Pham et al., ICML 2018), in PyTorch."""
