"""Data folders, samplers and training datasets."""
from voxprint.data.folder import DataFolder, prepare_data_folder, read_data_folder, write_data_folder
from voxprint.data.sampler import CropRequest, GE2EBatchSampler

__all__ = ["CropRequest", "DataFolder", "GE2EBatchSampler", "prepare_data_folder", "read_data_folder",
           "write_data_folder"]
