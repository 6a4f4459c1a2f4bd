"""Label sets and input statistics of the data sets the public BiSeNet code bases train on.

A checkpoint carries no class names or normalization; the families fill them in from the
data set their code base pairs with the detected class count. Values are as those code
bases' data loaders use them (mean/std in RGB order, applied to pixels scaled to 0..1).
"""

from __future__ import annotations

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

#: CamVid as distributed with Semantic-Segmentation-Suite (``class_dict.csv``, 32 classes in
#: file order); ooooverflow/BiSeNet trains on its 11-class subset plus a trailing "Void".
CAMVID_32_CLASSES = (
    "Animal", "Archway", "Bicyclist", "Bridge", "Building", "Car", "CartLuggagePram", "Child",
    "Column_Pole", "Fence", "LaneMkgsDriv", "LaneMkgsNonDriv", "Misc_Text", "MotorcycleScooter",
    "OtherMoving", "ParkingBlock", "Pedestrian", "Road", "RoadShoulder", "Sidewalk", "SignSymbol",
    "Sky", "SUVPickupTruck", "TrafficCone", "TrafficLight", "Train", "Tree", "Truck_Bus", "Tunnel",
    "VegetationMisc", "Void", "Wall",
)
CAMVID_11_CLASSES = (
    "Bicyclist", "Building", "Car", "Column_Pole", "Fence", "Pedestrian", "Road", "Sidewalk",
    "SignSymbol", "Sky", "Tree",
)
CAMVID_12_CLASSES = CAMVID_11_CLASSES + ("Void",)

#: CelebAMask-HQ parts in zllrunning/face-parsing.PyTorch's label order (0 = background).
FACE_PARSING_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)

#: CoinCheung/BiSeNet normalizes with per-data-set statistics, chosen here by class count:
#: n_cats -> (data set, mean, std, evaluation input size (H, W)).
COINCHEUNG_DATASETS = {
    19: ("Cityscapes", (0.3257, 0.3690, 0.3223), (0.2112, 0.2148, 0.2115), (1024, 2048)),
    150: ("ADE20k", (0.49343230, 0.46819794, 0.43106043), (0.25680755, 0.25506608, 0.27422913), (512, 512)),
    171: ("COCO-Stuff", (0.46962251, 0.4464104, 0.40718787), (0.27469736, 0.27012361, 0.28515933), (640, 640)),
}
#: Its CustomerDataset template, used for any other class count.
COINCHEUNG_CUSTOM = ("a custom data set", (0.4, 0.4, 0.4), (0.2, 0.2, 0.2), (512, 512))


def coincheung_dataset(num_classes: int) -> tuple[str, tuple, tuple, tuple[int, int]]:
    return COINCHEUNG_DATASETS.get(num_classes, COINCHEUNG_CUSTOM)
