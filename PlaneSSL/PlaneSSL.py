"""PlaneSSL 3D Slicer module.

The module file stays thin: Module metadata here, the work in the Qt-free ``PlaneSSLLib``
package. The interactive widget (inputs, models, Apply/Cancel, plane views) is built in the
Slicer-module issue; until then the module shows its help and the plane geometry tools are
available from Slicer's Python console through ``PlaneSSLLib.geometry``.
"""

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class PlaneSSL(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "PlaneSSL"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["PlaneSSL developers"]
        self.parent.helpText = (
            "Cardiac chamber segmentation and knee ACL-tear scoring with networks pretrained by "
            "self-supervision on the geometry of anatomy-oriented MRI imaging planes, and the planes' "
            "intersection lines drawn on linked slice views."
        )
        self.parent.acknowledgementText = (
            "Method: Zhang, Wei, Zhu, Gu, Zheng. Self-supervised learning for medical image data with "
            "anatomy-oriented imaging planes. Medical Image Analysis 94 (2024) 103151. arXiv:2403.16499."
        )


class PlaneSSLWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.layout.addStretch(1)


class PlaneSSLLogic(ScriptedLoadableModuleLogic):
    pass


class PlaneSSLTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_geometry_importable()

    def test_geometry_importable(self):
        from PlaneSSLLib.geometry import ImagePlane, intersect_images

        a = ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1], 64, 64)
        b = ImagePlane.from_dicom([10, 0, 0], [0, 1, 0, 0, 0, 1], [1, 1], 64, 64)
        self.assertFalse(intersect_images(a, b).parallel)
