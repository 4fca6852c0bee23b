import os, sys, ttnn
shape = os.environ.get("MESH_SHAPE")
d = ttnn.open_mesh_device(ttnn.MeshShape(*map(int, shape.split(",")))) if shape else ttnn.open_device(device_id=0)
ttnn.close_device(d)
print("OPENED")
